"""`tbxsweep report`: one self-contained HTML page whose plots carry the study's own data.

The page is parsed back: each figure's JSON (the data plotly.js draws) against the study
read through Optuna, and the leaderboard table against `tbxsweep leaderboard --csv`.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner, Result
from conftest import FAKE_SPEC, REPO, cli_env, merge

from tbxsweep.cli import main
from tbxsweep.export import report_html
from tbxsweep.schedule import run_sweep
from tbxsweep.spec import load_spec
from tbxsweep.study import SweepInfo

SPACE = {
    "x": {"type": "float", "low": 0.0, "high": 1.0},
    "finetune_depth": {"type": "int", "low": 0, "high": 2},
    "batch_size": {"type": "categorical", "choices": [16, 32]},
}
SECTIONS = ["summary", "history", "parallel", "importances", "curves", "leaderboard"]


def _process(*args: str) -> subprocess.CompletedProcess[str]:
    """`tbxsweep ARGS` in a fresh process: all it writes to stderr, warnings included."""
    return subprocess.run(
        [sys.executable, "-m", "tbxsweep", *args],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _cli(*args: str) -> Result:
    """`tbxsweep ARGS` in this process: the same command, without the ~3 s a fresh
    interpreter spends importing Optuna, pandas and plotly."""
    return CliRunner().invoke(main, list(args), prog_name="tbxsweep")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished fake sweep of 8 trials over three parameters, some pruned (~1-4 s).
    Shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("report")
    raw = merge(
        FAKE_SPEC,
        {
            "study": {
                "n_trials": 8,
                # pruning only once 4 trials completed: enough for the importances
                "pruner": {"name": "median", "n_startup_trials": 4, "n_warmup_steps": 1},
            },
            "search_space": SPACE,
            "task": {"epochs": 3},
            "output": {"dir": str(root / "out")},
        },
    )
    spec = root / "spec.yaml"
    spec.write_text(yaml.safe_dump(raw, sort_keys=False))
    # in this process: `tbxsweep start` in a fresh one spends ~3 s importing before it runs
    counts = run_sweep(load_spec(spec), on_event=lambda kind, info: None)
    assert (counts.finished, counts.failed) == (8, 0)
    return root / "out"


class _Page(HTMLParser):
    """What the tests read of the page: sections, figure JSON, table cells, script tags."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.figures: dict[str, dict[str, Any]] = {}
        self.notes: dict[str, str] = {}
        self.scripts: list[dict[str, str | None]] = []
        self.links: list[dict[str, str | None]] = []
        self.header: list[str] = []
        self.rows: list[list[str]] = []
        self._section = ""
        self._figure: str | None = None
        self._text: list[str] | None = None
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section":
            self._section = a["id"] or ""
            self.sections.append(self._section)
        elif tag == "script":
            self.scripts.append(a)
            if a.get("type") == "application/json":
                self._figure, self._text = a["data-figure"], []
        elif tag == "link":
            self.links.append(a)
        elif tag == "p" and a.get("class") == "note":
            self._in, self._text = "note", []
        elif tag == "tr" and self._section == "leaderboard":
            self.rows.append([])
        elif tag in ("td", "th") and self._section == "leaderboard":
            self._in, self._text = tag, []

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        text = "".join(self._text or [])
        if tag == "script" and self._figure is not None:
            self.figures[self._figure.removeprefix("fig-")] = json.loads(text)
            self._figure, self._text = None, None
        elif tag == "p" and self._in == "note":
            self.notes[self._section] = text
            self._in, self._text = None, None
        elif tag in ("td", "th") and self._in == tag:
            if tag == "th":
                self.header.append(text)
            else:
                self.rows[-1].append(text)
            self._in, self._text = None, None


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.rows = [r for r in page.rows if r]  # the header's <tr>
    return page


def _study(out: Path) -> optuna.Study:
    return optuna.load_study(study_name="fake", storage=f"sqlite:///{out / 'study.db'}")


def test_report_plots_the_study_and_tables_the_leaderboard(sweep: Path, tmp_path: Path) -> None:
    done = _process("report", str(sweep))
    assert (done.returncode, done.stdout, done.stderr) == (0, f"wrote {sweep}/report.html\n", "")
    html = (sweep / "report.html").read_text()
    page = _parse(html)
    study = _study(sweep)
    trials = study.get_trials()
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) >= 4 and len(trials) == 8

    # self-contained: plotly.js inline, nothing fetched (no src, no stylesheet links)
    assert [s for s in page.scripts if s.get("src")] == []
    assert page.links == []
    assert "Plotly.newPlot" in html and len(html) > 3_000_000  # plotly.js itself is ~4.7 MB
    assert page.sections == SECTIONS
    assert sorted(page.figures) == ["curves", "history", "importances", "parallel"]
    assert not list(sweep.glob(".report.html*"))  # the temp file was renamed

    # optimisation history: each completed trial's value at its number
    points = next(d for d in page.figures["history"]["data"] if d["name"] == "score")
    expected = [(t.number, t.value) for t in complete]
    assert list(zip(points["x"], points["y"], strict=True)) == expected

    # parallel coordinates: the metric, then exactly the search space's parameters;
    # one line per completed trial
    axes = page.figures["parallel"]["layout"]["xaxis"]["ticktext"]
    assert axes[0] == "score" and sorted(axes[1:]) == sorted(SPACE)
    lines = [d for d in page.figures["parallel"]["data"] if d.get("customdata")]
    assert len(lines) == len(complete)

    # importances: one bar per parameter, summing to 1
    bars = page.figures["importances"]["data"][0]
    assert sorted(bars["y"]) == sorted(SPACE)
    assert math.isclose(sum(bars["x"]), 1.0, abs_tol=0.02)  # rounded to 2 digits per bar

    # validation curves: every complete or pruned trial's reported values, grouped by depth
    curves = page.figures["curves"]["data"]
    shown = sorted(
        (t for t in trials if t.state.name in ("COMPLETE", "PRUNED")),
        key=lambda t: (t.params["finetune_depth"], t.number),
    )
    assert [c["meta"]["trial"] for c in curves] == [t.number for t in shown]
    for c, t in zip(curves, shown, strict=True):
        steps = sorted(t.intermediate_values)
        assert (c["x"], c["y"]) == (steps, [t.intermediate_values[s] for s in steps])
        assert c["legendgroup"] == f"finetune_depth={t.params['finetune_depth']}"
        assert c["line"]["dash"] == ("dot" if t.state.name == "PRUNED" else "solid")

    # the table: the leaderboard's top rows, as `tbxsweep leaderboard --csv` has them
    csv = tmp_path / "lb.csv"
    assert _cli("leaderboard", str(sweep), "--csv", str(csv)).exit_code == 0
    board = pd.read_csv(csv).drop(columns=["error", "worker_pid"]).head(10)
    assert page.header == list(board.columns)
    assert page.rows == [[_shown(c, v) for c, v in row.items()] for _, row in board.iterrows()]


def _shown(col: str, v: Any) -> str:
    """A CSV cell as the page shows it: integers whole, other numbers to 4 digits."""
    if isinstance(v, float) and math.isnan(v):
        return ""
    if col in ("rank", "trial", "best_epoch", "epochs_run", "trainable_params", "finetune_depth"):
        return str(int(v))
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def test_report_out_and_top(sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "sub" / "mine.html"
    done = _cli("report", str(sweep), "--out", str(out), "--top", "3")
    assert (done.exit_code, done.stdout) == (0, f"wrote {out}\n")
    page = _parse(out.read_text())
    assert len(page.rows) == 3
    assert [r[0] for r in page.rows] == ["1", "2", "3"]


def test_report_of_a_directory_without_a_sweep_writes_nothing(tmp_path: Path) -> None:
    done = _cli("report", str(tmp_path))
    assert done.exit_code == 2
    assert done.stderr == (
        f"error: {tmp_path}: not a tbxsweep output directory (no sweep.json); "
        "give the output.dir of a sweep started with `tbxsweep start`\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_young_study_gets_sentences_instead_of_plots() -> None:
    """Too few completed trials for importances; no finetune_depth in the space; no
    per-epoch values: each section says why it has no plot."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize")
    for x in (0.2, 0.7):
        trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)})
        study.tell(trial, x)
    info = SweepInfo("young", None, "minimize", "val_loss", ("lr",))
    page = _parse(report_html(study, info))
    assert page.sections == SECTIONS
    assert sorted(page.figures) == ["history", "parallel"]
    assert page.notes == {
        "importances": "Parameter importances need at least 4 completed trials; this study has 2.",
        "curves": "No trial reported per-epoch values to the study.",
    }
    assert page.figures["parallel"]["layout"]["xaxis"]["ticktext"] == ["val_loss", "lr"]
