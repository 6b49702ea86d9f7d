"""Workers pinned to GPU slots by UUID: fake trials in real loky workers (no GPU here)."""

from __future__ import annotations

import json
from pathlib import Path

from tbxsweep.schedule import run_sweep
from tbxsweep.spec import load_spec

UUIDS = ("GPU-8932f937-d72c-4106-c12f-20bd9faed9f6", "GPU-1c2d3e4f-0000-1111-2222-333344445555")


def test_workers_get_the_gpu_uuids_they_were_given(make_spec, tmp_path, monkeypatch) -> None:
    """With CUDA_VISIBLE_DEVICES=GPU-a,GPU-b each trial sees one of those UUIDs, never an
    index such as "0" that would name a GPU this process was not given."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", ",".join(UUIDS))
    path = make_spec(
        study={"n_trials": 6},
        resources={"gpus": "auto", "trials_per_gpu": 2},
        search_space={
            "x": {"type": "float", "low": 0.0, "high": 1.0},
            "sleep": {"type": "categorical", "choices": [0.3]},
        },
    )
    events: list[str] = []
    counts = run_sweep(load_spec(path), on_event=lambda kind, info: events.append(kind))
    assert counts.finished == 6
    assert "warning" not in events
    recs = [json.loads(p.read_text()) for p in sorted(Path(tmp_path, "out").glob("*/fake.json"))]
    assert len(recs) == 6
    assert {r["cuda"] for r in recs} <= set(UUIDS)
    assert all(r["device"] == f"gpu:{r['cuda']}" for r in recs)
    by_pid: dict[int, set[str]] = {}
    for r in recs:
        by_pid.setdefault(r["pid"], set()).add(r["cuda"])
    assert all(len(g) == 1 for g in by_pid.values())  # a worker keeps its GPU
