"""`study.enqueue`: each configuration checked against the search space at load time, one
exact line per problem with its YAML path, exit 2 and nothing written."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from conftest import FAKE_SPEC, merge
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tbxsweep.cli import main
from tbxsweep.errors import SpecError
from tbxsweep.spec import load_spec

SPACE = {
    "x": {"type": "float", "low": 0.001, "high": 0.1, "log": True},
    "y": {"type": "int", "low": 0, "high": 10, "step": 2},
    "z": {"type": "float", "low": -1.0, "high": 1.0, "step": 0.25},
    "c": {"type": "categorical", "choices": ["adam", "sgd", 3]},
}


def _spec(make_spec: Any, enqueue: Any, **study: Any) -> Path:
    return make_spec(study={"n_trials": 8, "enqueue": enqueue, **study}, search_space=SPACE)


def _errors(path: Path, overrides: list[str] | None = None) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(path, overrides or [])
    return info.value.problems


def test_valid_configurations_load_in_order_as_written(make_spec) -> None:
    known = [{"x": 0.01, "y": 4, "z": -0.75, "c": "sgd"}, {"c": 3}, {"z": 1, "x": 0.1}]
    spec = load_spec(_spec(make_spec, known))
    assert spec.study.enqueue == tuple(known)
    assert load_spec(_spec(make_spec, None)).study.enqueue == ()
    over = load_spec(_spec(make_spec, []), ["study.enqueue=[{y: 2}, {x: 1e-3}]"])
    assert over.study.enqueue == ({"y": 2}, {"x": 0.001})


CASES = [
    (
        [{"x": 0.01}, {"x": 0.5}],
        "study.enqueue[1].x: `0.001 <= x <= 0.1` must hold (search_space.x), got x=0.5",
    ),
    (
        [{"y": 3}],
        "study.enqueue[0].y: `(y - 0) % 2 == 0` must hold (search_space.y.step: 2), got y=3",
    ),
    (
        [{"z": 0.3}],
        "study.enqueue[0].z: `(z - -1.0) % 0.25 == 0` must hold (search_space.z.step: 0.25), "
        "got z=0.3",
    ),
    (
        [{"y": 2.5}],
        "study.enqueue[0].y: must be an integer (search_space.y is type: int), got the number 2.5",
    ),
    (
        [{"y": True}],
        "study.enqueue[0].y: must be an integer (search_space.y is type: int), "
        "got the boolean True",
    ),
    (
        [{"x": "fast"}],
        "study.enqueue[0].x: must be a finite number (search_space.x is type: float), "
        "got the string 'fast'",
    ),
    (
        [{"x": None}],
        "study.enqueue[0].x: must be a finite number (search_space.x is type: float), got null",
    ),
    (
        [{"c": "adamw"}],
        "study.enqueue[0].c: must be one of search_space.c.choices: 'adam', 'sgd', 3, "
        "got 'adamw' (did you mean 'adam'?)",
    ),
    (
        [{"c": [3]}],
        "study.enqueue[0].c: must be one of search_space.c.choices: 'adam', 'sgd', 3, got [3]",
    ),
    (
        [{"learning_rat": 0.1}],
        "study.enqueue[0]: unknown key 'learning_rat'; search_space has x, y, z, c",
    ),
    ([{"yy": 2}], "study.enqueue[0]: unknown key 'yy' (did you mean 'y'?)"),
    (
        [{"x": 0.01}, "x=0.01"],
        "study.enqueue[1]: must be a mapping of search_space keys to values, "
        "got the string 'x=0.01'",
    ),
    ([{}], "study.enqueue[0]: must name at least one search_space key, got {}"),
    ([{1: 0.01}], "study.enqueue[0]: keys must be search_space names, got the integer 1"),
    (
        {"x": 0.01},
        "study.enqueue: must be a list of configurations (mappings of search_space keys to "
        "values), got a mapping {'x': 0.01}",
    ),
    (
        [{"y": 2, "c": "adam"}, {"x": 0.01}, {"c": "adam", "y": 2}],
        "study.enqueue[2]: the same configuration as study.enqueue[0] (each runs once), "
        "got {c: 'adam', y: 2}",
    ),
    (
        [{"y": y} for y in range(0, 12, 2)] + [{"c": "adam"}, {"c": "sgd"}, {"c": 3}],
        "study.enqueue: `len(enqueue) <= n_trials` must hold (each configuration is one "
        "trial), got 9 configurations, n_trials=8",
    ),
]


@pytest.mark.parametrize(("enqueue", "message"), CASES)
def test_a_bad_configuration_gets_one_exact_line(make_spec, enqueue, message) -> None:
    path = _spec(make_spec, enqueue)
    assert _errors(path) == [f"{path}: {message}"]


def test_the_grid_sampler_refuses_them(make_spec) -> None:
    path = _spec(make_spec, [{"y": 2}], sampler={"name": "grid"})
    space = ["search_space.x.step=0.01", "search_space.x.log=false"]
    assert _errors(path, space) == [
        f"{path}: study.enqueue: does not apply with sampler grid (it runs every grid point "
        "itself, so an enqueued one would run twice), got 1 configuration(s): drop "
        "study.enqueue or use another sampler"
    ]


def test_the_cli_answers_each_bad_configuration_with_one_line_and_writes_nothing(
    make_spec, tmp_path, run_cli
) -> None:
    path = _spec(make_spec, [{"x": 0.01, "y": 2}, {"x": 0.5}, {"c": "sgd"}, {"w": 1}])
    proc = run_cli("start", str(path))
    assert proc.returncode == 2
    assert proc.stderr == (
        f"error: {path}: study.enqueue[1].x: `0.001 <= x <= 0.1` must hold (search_space.x), "
        "got x=0.5\n"
        f"error: {path}: study.enqueue[3]: unknown key 'w'; search_space has x, y, z, c\n"
    )
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_depth_beyond_the_base_model_is_refused_once_high_max_is_known(
    make_spec, tmp_path
) -> None:
    path = make_spec(
        base="digits",
        study={"enqueue": [{"finetune_depth": 2}, {"finetune_depth": 6, "batch_size": 32}]},
        search_space={"finetune_depth": {"type": "int", "low": 1, "high": "max"}},
    )
    result = CliRunner().invoke(main, ["start", str(path)])
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {path}: study.enqueue[1].finetune_depth: `finetune_depth <= 4` must hold "
        "(high: max is the base model's 4 weighted layers), got finetune_depth=6\n"
    )
    assert not (tmp_path / "out").exists()
    # Below `low` is known at load time already.
    assert _errors(path, ["study.enqueue=[{finetune_depth: 0}]"]) == [
        f"{path}: study.enqueue[0].finetune_depth: `finetune_depth >= 1` must hold "
        "(search_space.finetune_depth), got finetune_depth=0"
    ]


# -- fuzzing: any list of valid and invalid configurations --------------------------------

VALID = {
    "x": st.floats(0.001, 0.1),
    "y": st.sampled_from(range(0, 11, 2)),
    "z": st.integers(0, 8).map(lambda k: -1.0 + 0.25 * k),
    "c": st.sampled_from(["adam", "sgd", 3]),
}


def _bad_value(key: str) -> st.SearchStrategy[tuple[Any, str]]:
    """(a value outside the key's domain, the exact message for it)."""
    x_range = "`0.001 <= x <= 0.1` must hold (search_space.x)"
    not_int = "must be an integer (search_space.y is type: int)"
    choices = "must be one of search_space.c.choices: 'adam', 'sgd', 3"
    kinds = {
        "x": st.one_of(
            st.floats(0.1, 1e6, exclude_min=True).map(lambda v: (v, f"{x_range}, got x={v!r}")),
            st.floats(-1e6, 0.001, exclude_max=True).map(lambda v: (v, f"{x_range}, got x={v!r}")),
            st.sampled_from(["fast", True]).map(
                lambda v: (
                    v,
                    "must be a finite number (search_space.x is type: float), got "
                    + ("the boolean True" if v is True else f"the string {v!r}"),
                )
            ),
        ),
        "y": st.one_of(
            st.sampled_from([1, 3, 5, 7, 9]).map(
                lambda v: (
                    v,
                    f"`(y - 0) % 2 == 0` must hold (search_space.y.step: 2), got y={v}",
                )
            ),
            st.integers(12, 10**6)
            .filter(lambda v: v % 2 == 0)
            .map(lambda v: (v, f"`0 <= y <= 10` must hold (search_space.y), got y={v}")),
            st.floats(0, 10)
            .filter(lambda v: not v.is_integer())
            .map(lambda v: (v, f"{not_int}, got the number {v!r}")),
        ),
        "z": st.integers(1, 7)
        .map(lambda k: -1.0 + 0.25 * k + 0.1)
        .map(
            lambda v: (
                v,
                f"`(z - -1.0) % 0.25 == 0` must hold (search_space.z.step: 0.25), got z={v!r}",
            )
        ),
        "c": st.sampled_from([4, "SGD-x", True, 3.5]).map(lambda v: (v, f"{choices}, got {v!r}")),
    }
    return kinds[key]


@st.composite
def _entry(draw: st.DrawFn, bad: bool) -> tuple[dict[str, Any], str | None]:
    """A configuration and, when `bad`, the one line (after its path) it must get."""
    keys = draw(st.lists(st.sampled_from(list(SPACE)), min_size=1, max_size=4, unique=True))
    entry = {k: draw(VALID[k]) for k in keys}
    if not bad:
        return entry, None
    key = draw(st.sampled_from([*keys, "w"]))
    if key == "w":
        entry["w"] = 1
        return entry, ": unknown key 'w'; search_space has x, y, z, c"
    value, message = draw(_bad_value(key))
    entry[key] = value
    return entry, f".{key}: {message}"


@st.composite
def _entries(draw: st.DrawFn) -> list[tuple[dict[str, Any], str | None]]:
    drawn = draw(st.lists(st.booleans().flatmap(_entry), min_size=1, max_size=6))
    # Two equal valid configurations are a problem of their own (tested above): keep the
    # first of each.
    out, seen = [], set()
    for entry, message in drawn:
        same = frozenset(entry.items())
        if message is None and same in seen:
            continue
        seen.add(same)
        out.append((entry, message))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_entries())
def test_fuzz_every_bad_configuration_gets_exactly_its_one_line(entries) -> None:
    raw = merge(FAKE_SPEC, {"study": {"n_trials": 8}, "search_space": SPACE})
    raw["study"]["enqueue"] = [e for e, _ in entries]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "spec.yaml")
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        expected = [
            f"{path}: study.enqueue[{i}]{m}" for i, (_, m) in enumerate(entries) if m is not None
        ]
        if not expected:
            spec = load_spec(path)
            assert spec.study.enqueue == tuple(e for e, _ in entries)
            return
        assert _errors(path) == expected
