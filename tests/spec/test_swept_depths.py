"""`spec.swept_depths`: every fine-tune depth a sweep's trials may train at (the feature
cache builds all their cuts in one pass)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tbxsweep.spec import load_spec, resolve_space, swept_depths

LR = {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}


def _spec(make_spec: Any, space: dict[str, Any], enqueue: Any = ()) -> Path:
    """The digits spec with exactly this search space (not merged into the default's)."""
    path = make_spec(base="digits")
    raw = yaml.safe_load(path.read_text())
    raw["search_space"] = space
    raw["study"].update(n_trials=4, enqueue=list(enqueue))
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("depth", "enqueue", "expected"),
    [
        ({"type": "int", "low": 1, "high": 4}, [], (1, 2, 3, 4)),
        ({"type": "int", "low": 0, "high": 6, "step": 3}, [], (0, 3, 6)),
        ({"type": "categorical", "choices": [5, 2]}, [], (2, 5)),
        ({"type": "int", "low": 1, "high": 2}, [{"finetune_depth": 2}, {"learning_rate": 0.01}],
         (1, 2)),
        (None, [], ()),
    ],
)  # fmt: skip
def test_the_depths_of_the_space_and_the_queue(
    make_spec, depth: Any, enqueue: Any, expected: tuple[int, ...]
) -> None:
    space = {"learning_rate": LR, **({"finetune_depth": depth} if depth else {})}
    assert swept_depths(load_spec(_spec(make_spec, space, enqueue))) == expected


def test_high_max_counts_once_resolved(make_spec) -> None:
    space = {"learning_rate": LR, "finetune_depth": {"type": "int", "low": 2, "high": "max"}}
    spec = load_spec(_spec(make_spec, space))
    assert swept_depths(spec) == ()
    assert swept_depths(resolve_space(spec, 4, "spec.yaml")) == (2, 3, 4)
