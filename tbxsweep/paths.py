"""Every on-disk path of a sweep is built here and nowhere else."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

STUDY_DB = "study.db"
SWEEP_JSON = "sweep.json"
LEADERBOARD_CSV = "leaderboard.csv"
REPORT_HTML = "report.html"
TRIAL_JSON = "trial.json"
CHECKPOINT_WEIGHTS = "checkpoint.weights.h5"
CHECKPOINT_JSON = "checkpoint.json"
# A completed trial's best-epoch model (the whole Keras model), kept for the best
# `output.keep_models` trials; with repeats, in the run of the best repeat.
BEST_MODEL = "best.keras"
# A completed trial's best epoch's weights, for the test split's evaluation at the end.
BEST_WEIGHTS = "best.weights.h5"


@dataclass(frozen=True)
class SweepPaths:
    """The layout of one sweep's output directory.

    results/lr/
      study.db             Optuna storage (SQLite) unless study.storage names another
      sweep.json           what `leaderboard`/`board`/`check` need to find the study
      leaderboard.csv      rewritten atomically after every finished trial
      report.html          `tbxsweep report`: the plots and top rows, one offline page
      trial-0007/          one TensorBoard run per trial (+ trial.json: pid, heartbeat;
                           best.keras: its best epoch's model, for the best keep_models)
      cache/               the pretrained base model, keyed by a hash of its config
      _aside/              partial runs of trials that died, kept out of TensorBoard's view
    """

    root: Path

    @property
    def study_db(self) -> Path:
        return self.root / STUDY_DB

    @property
    def sweep_json(self) -> Path:
        return self.root / SWEEP_JSON

    @property
    def leaderboard_csv(self) -> Path:
        return self.root / LEADERBOARD_CSV

    @property
    def report_html(self) -> Path:
        """`tbxsweep report`'s page (one self-contained HTML file)."""
        return self.root / REPORT_HTML

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def aside_dir(self) -> Path:
        return self.root / "_aside"

    @property
    def sweep_run_dir(self) -> Path:
        """The run that holds sweep-level curves (best value so far, importances)."""
        return self.root / "sweep"

    def base_model(self, key: str) -> Path:
        return self.cache_dir / f"base-{key}.keras"

    @staticmethod
    def run_name(number: int) -> str:
        """The TensorBoard run name of trial `number` (the leaderboard's `run` column).

        It is also the trial's HParams session group; with `study.repeats > 1` each
        repeat is a run of its own below it (`trial-0007/r1`).
        """
        return f"trial-{number:04d}"

    @classmethod
    def repeat_run_name(cls, number: int, repeat: int, repeats: int) -> str:
        return cls.run_name(number) if repeats == 1 else f"{cls.run_name(number)}/r{repeat}"

    def trial_dir(self, number: int) -> Path:
        return self.root / self.run_name(number)

    def best_model(self, run: str) -> Path:
        """The kept model of the run named `run` (`trial-0007` or `trial-0007/r1`)."""
        return self.root / run / BEST_MODEL

    def default_storage_url(self) -> str:
        return f"sqlite:///{self.study_db.resolve()}"


def unwritable_dir(path: Path) -> str | None:
    """Why the directory `path` (there or not yet) cannot be created and written; None when
    it can. Tried for real: `os.access` answers yes to root on a read-only mount or /proc."""
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is a file, not a directory"
    try:
        tmp = tempfile.mkdtemp(prefix=".tbxsweep-probe-", dir=probe)
    except OSError as exc:
        return f"cannot write to {path}: creating a directory in {probe} fails ({exc.strerror})"
    try:  # the missing part of the path, inside the probe: names the file system refuses
        Path(tmp, *path.relative_to(probe).parts).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create {path} ({exc.strerror})"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return None
