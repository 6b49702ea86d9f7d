"""The one class that owns a tensorboardX SummaryWriter, and the sweep-root experiment."""

from __future__ import annotations

import glob
import itertools
import os
import time
from pathlib import Path
from typing import Any

from tensorboardX import SummaryWriter

from tbxsweep.spec import Spec
from tbxsweep.tblog._hparams import (
    STATE_CODES,
    HParamsStatus,
    experiment_summary,
    session_end_summary,
    session_start_summary,
)

_writers = itertools.count()  # this process's writers, for their files' names


class TrialLogger:
    """Writes one TensorBoard run: hparams session records, scalars, text, images.

    Every write is flushed at once so a running sweep can be watched live. A run may get
    several writers (its trial's; the test evaluation's; the orchestrator's when it ends a
    killed worker's session), each with an event file of its own: tensorboardX names a file
    by the second and the host only, and a second writer in the same second would truncate
    the first's file. The time in nanoseconds, the process id and a per-process count
    follow, so names also sort in the order the writers started: TensorBoard reads a run's
    files in name order and drops the later steps of a tag when an earlier step follows
    (a killed trial's state 0 read after the orchestrator's state 3 would win).
    """

    def __init__(self, run_dir: str | Path, filename_suffix: str = "") -> None:
        """`filename_suffix`: what the file's name ends with, after the unique part."""
        self.run_dir = Path(run_dir)
        self._writer = SummaryWriter(
            logdir=str(self.run_dir),
            flush_secs=5,
            max_queue=1000,
            filename_suffix=f".{time.time_ns()}.{os.getpid()}.{next(_writers)}{filename_suffix}",
        )
        self._ended = False

    @property
    def writer(self) -> SummaryWriter:
        """The underlying tensorboardX writer, for what this class does not wrap."""
        return self._writer

    def start_session(
        self, spec: Spec, params: dict[str, Any], group: str, start_time: float
    ) -> None:
        self._raw(session_start_summary(spec, params, group, start_time), 0, start_time)
        self.scalars(0, {"state": STATE_CODES["RUNNING"]})

    def end_session(self, status: HParamsStatus, end_time: float | None = None) -> None:
        """Write the session end once: TensorBoard keeps only the first one it finds."""
        if self._ended:
            return
        self._ended = True
        t = time.time() if end_time is None else end_time
        self._raw(session_end_summary(status, t), 0, t)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        now = time.time()
        for tag, value in values.items():
            self._writer.add_scalar(tag, float(value), global_step=step, walltime=now)
        self._writer.flush()

    def text(self, tag: str, text: str, step: int = 0) -> None:
        self._writer.add_text(tag, text, global_step=step)
        self._writer.flush()

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.flush()
        self._writer.close()

    def _raw(self, summary: Any, step: int, walltime: float) -> None:
        _add_summary(self._writer, summary, step, walltime)
        self._writer.flush()


def write_experiment(root: str | Path, spec: Spec) -> bool:
    """Write the HParams experiment at the sweep's log root, once per sweep directory.

    TensorBoard uses the first experiment record it finds, so a second one would only
    mislead; returns False when the root already has one.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if glob.glob(os.path.join(str(root), "events.out.tfevents.*")):
        return False
    now = time.time()
    writer = SummaryWriter(logdir=str(root))
    _add_summary(writer, experiment_summary(spec, now), 0, now)
    writer.flush()
    writer.close()
    return True


def _add_summary(writer: SummaryWriter, summary: Any, step: int, walltime: float) -> None:
    """Write a hand-built Summary proto into the writer's own event file.

    `SummaryWriter.file_writer` (a public `tensorboardX.FileWriter`, what tensorboardX's own
    `add_hparams` writes its records through) is set while the writer is open; a second
    writer in the run directory would start a second event file, which TensorBoard stops
    watching for live updates once a newer one appears.
    """
    file_writer = writer.file_writer
    if file_writer is None:
        raise RuntimeError(f"the TensorBoard writer of {writer.logdir} is closed")
    file_writer.add_summary(summary, step, walltime)
