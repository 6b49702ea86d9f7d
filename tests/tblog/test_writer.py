"""TrialLogger's event files: several writers into one run never overwrite each other."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_writers_into_one_run_in_the_same_second_keep_every_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trial's writer and a second one (the orchestrator ending a killed worker's session,
    the test evaluation) in the same second: tensorboardX names files by the second and the
    host, and the second file would replace the first."""
    import tensorboardX.event_file_writer as efw
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    from tbxsweep.tblog import TrialLogger

    monkeypatch.setattr(efw.time, "time", lambda: 1_800_000_000.25)
    first = TrialLogger(tmp_path)
    first.scalars(1, {"loss": 0.5})
    second = TrialLogger(tmp_path)
    second.scalars(1, {"state": 3.0})
    first.close()
    second.close()
    files = sorted(tmp_path.glob("*tfevents*"))
    assert len(files) == 2
    tags = {
        v.tag
        for f in files
        for e in EventFileLoader(str(f)).Load()
        if e.HasField("summary")
        for v in e.summary.value
    }
    assert tags == {"loss", "state"}
    # names sort as the writers started: TensorBoard reads them in that order
    first_tags = {
        v.tag
        for e in EventFileLoader(str(files[0])).Load()
        if e.HasField("summary")
        for v in e.summary.value
    }
    assert first_tags == {"loss"}
