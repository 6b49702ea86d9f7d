"""The GRAPHS tab's graph (tblog/_extras.py `log_graph`): traced once per worker model, and
per trainable part only where the scopes show it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow


def _chain() -> Any:
    import keras

    inp = keras.Input((8,), name="image")
    x = keras.layers.Dense(4, name="low")(inp)
    out = keras.layers.Dense(2, name="head")(keras.layers.Dense(4, name="high")(x))
    return keras.Model(inp, out)


def _residual() -> Any:
    import keras

    inp = keras.Input((8,), name="image")
    x = keras.layers.Dense(8, name="low")(inp)
    x = keras.layers.Add(name="skip")([x, keras.layers.Dense(8, name="high")(x)])
    return keras.Model(inp, keras.layers.Dense(2, name="head")(x))


def _graphs(run: Path) -> list[bytes]:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    return [
        e.graph_def
        for f in sorted(run.glob("*tfevents*"))
        for e in EventFileLoader(str(f)).Load()
        if e.HasField("graph_def")
    ]


@pytest.mark.parametrize(("build", "traces"), [(_chain, 2), (_residual, 1)])
def test_a_graph_is_traced_once_per_model_and_per_trainable_part_of_a_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, build: Any, traces: int
) -> None:
    from tbxsweep.tblog import TrialLogger, _extras

    calls: list[list[str] | None] = []
    real = _extras._trace

    def counted(model: Any, shape: Any, trainable: Any) -> Any:
        calls.append(trainable)
        return real(model, shape, trainable)

    monkeypatch.setattr(_extras, "_trace", counted)
    monkeypatch.setattr(_extras, "_graphs", {})
    model = build()
    key = ("worker model", id(model))
    written = []
    for i, trainable in enumerate([["high"], ["low", "high"], ["high"]]):
        logger = TrialLogger(tmp_path / f"trial-{i}")
        assert _extras.log_graph(logger, model, (8,), trainable, cache_key=key)
        logger.close()
        (graph,) = _graphs(tmp_path / f"trial-{i}")
        written.append(graph)
    assert calls == [["high"], ["low", "high"]][:traces]
    assert written[0] == written[2]
    if build is _chain:  # scopes: what trains at each depth
        assert b"frozen/low" in written[0] and b"trainable/low" in written[1]
    else:  # traced whole: one graph, whatever trains
        assert written[0] == written[1] and b"frozen/" not in written[0]
