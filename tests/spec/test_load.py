"""Spec validation: exact error lines, exit code 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tbxsweep.cli import main
from tbxsweep.errors import SpecError
from tbxsweep.spec import load_spec

REPO = Path(__file__).resolve().parents[2]


def test_demo_spec_loads_with_the_documented_shape() -> None:
    spec = load_spec(REPO / "sweeps" / "lr.yaml")
    assert spec.study.name == "lr"
    assert spec.study.n_trials == 16
    assert list(spec.search_space) == ["learning_rate", "batch_size", "finetune_depth"]
    assert spec.search_space["batch_size"].choices == [16, 32, 64, 128]
    assert spec.output_dir == Path("results/lr")


def test_overrides_are_dotted_paths_with_yaml_values() -> None:
    spec = load_spec(
        REPO / "sweeps" / "lr.yaml",
        [
            "study.n_trials=4",
            "output.dir=results/lr-quick",
            "resources.gpus=[0, 2]",
            "study.timeout=null",
        ],
    )
    assert spec.study.n_trials == 4
    assert spec.output_dir == Path("results/lr-quick")
    assert spec.resources.gpus == (0, 2)
    assert spec.study.timeout is None


def _errors(path: Path, overrides: list[str] | None = None) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(path, overrides or [])
    return info.value.problems


CASES = [
    ({"study": {"n_trials": 0}}, "study.n_trials: `n_trials >= 1` must hold, got n_trials=0"),
    (
        {"study": {"direction": "maximise"}},
        "study.direction: must be one of 'maximize' or 'minimize', got 'maximise' "
        "(did you mean 'maximize'?)",
    ),
    (
        {"study": {"sampler": {"name": "tpee"}}},
        "study.sampler.name: must be one of 'tpe', 'random', 'grid', 'cmaes' or 'qmc', got 'tpee' "
        "(did you mean 'tpe'?)",
    ),
    (
        {"study": {"pruner": {"name": "meadian"}}},
        "study.pruner.name: must be one of 'median', 'hyperband', 'successive_halving' or 'none', "
        "got 'meadian' (did you mean 'median'?)",
    ),
    ({"study": {"timeot": 5}}, "study: unknown key 'timeot' (did you mean 'timeout'?)"),
    ({"search_spcae": {}}, "unknown key 'search_spcae' (did you mean 'search_space'?)"),
    (
        {
            "search_space": {
                "learning_rate": {"type": "float", "low": 0.0, "high": 0.1, "log": True}
            }
        },
        "search_space.learning_rate: `low > 0` must hold when log is true, got low=0.0",
    ),
    (
        {"search_space": {"finetune_depth": {"type": "int", "low": 3, "high": 1}}},
        "search_space.finetune_depth: `low <= high` must hold, got low=3, high=1",
    ),
    (
        {"search_space": {"batch_size": {"type": "categorical", "choices": []}}},
        "search_space.batch_size.choices: must not be empty, got []",
    ),
    (
        {"search_space": {"dropout": {"type": "flaot", "low": 0, "high": 1}}},
        "search_space.dropout.type: must be one of 'float', 'int', 'categorical', got 'flaot'",
    ),
    ({"task": {"epochs": -1}}, "task.epochs: `epochs >= 1` must hold, got epochs=-1"),
    (
        {"task": {"dataset": "imagenet"}},
        "task.dataset: must be one of 'digits', 'cifar10', 'cifar100', 'mnist', 'fashion_mnist' "
        "or a mapping with one of the keys 'npz', 'images', 'loader', got 'imagenet'",
    ),
    ({"task": {"epochs": "many"}}, "task.epochs: must be an integer, got the string 'many'"),
    ({"resources": {"n_jobs": 0}}, "resources.n_jobs: must be 'auto' or an integer >= 1, got 0"),
    (
        {"resources": {"gpus": "all"}},
        "resources.gpus: must be 'auto', 'none' or a list of GPU ids like [0, 1], got 'all'",
    ),
    ({"resources": {"gpus": [0, 0]}}, "resources.gpus: GPU ids must be unique, got [0, 0]"),
    (
        {"study": {"name": "my/study"}},
        "study.name: must be letters, digits, '_', '.' or '-' (starting with a letter or digit), "
        "got 'my/study'",
    ),
    (
        {"study": {"metric": "f1"}},
        "study.metric: must be one of 'val_accuracy', 'val_loss', 'accuracy', 'loss' for the "
        "built-in task, got 'f1'",
    ),
    (
        {"task": {"train": "not-a-ref"}},
        "task.train: must look like 'package.module:function', got 'not-a-ref'",
    ),
    # the built-in task reads three keys: any other one would be sampled and ignored
    (
        {"search_space": {"lr": {"type": "float", "low": 1e-4, "high": 1e-2}}},
        "search_space: unknown key 'lr' for the built-in task (did you mean 'learning_rate'?)",
    ),
    (
        {"search_space": {"dropout": {"type": "float", "low": 0.0, "high": 0.5}}},
        "search_space: unknown key 'dropout' for the built-in task; it reads learning_rate, "
        "batch_size, finetune_depth (or set task.train)",
    ),
    (
        {"search_space": {"finetune_depth": {"type": "int", "low": -1, "high": 2}}},
        "search_space.finetune_depth.low: `low >= 0` must hold for the built-in task, got low=-1",
    ),
    # `high: max` skips no rule that holds whatever the depth is
    (
        {"search_space": {"finetune_depth": {"type": "int", "low": 0, "high": "max", "log": True}}},
        "search_space.finetune_depth: `low > 0` must hold when log is true, got low=0",
    ),
]


@pytest.mark.parametrize(("over", "message"), CASES, ids=[c[1].split(":")[0] for c in CASES])
def test_bad_spec_gets_one_exact_line(make_spec, over, message) -> None:
    path = make_spec(base="digits", **over)
    assert _errors(path) == [f"{path}: {message}"]


def test_every_problem_is_reported_at_once(make_spec) -> None:
    path = make_spec(base="digits", study={"n_trials": 0, "timeot": 1}, task={"epochs": 0})
    assert _errors(path) == [
        f"{path}: study.n_trials: `n_trials >= 1` must hold, got n_trials=0",
        f"{path}: study: unknown key 'timeot' (did you mean 'timeout'?)",
        f"{path}: task.epochs: `epochs >= 1` must hold, got epochs=0",
    ]


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("study:\n  name: lr\n  n_trials: [4\nsearch_space: {}\n")
    assert _errors(path) == [f"{path}:4:13: YAML syntax error: expected ',' or ']', but got ':'"]


def test_missing_and_empty_files(tmp_path: Path) -> None:
    assert _errors(tmp_path / "nope.yaml") == [f"{tmp_path / 'nope.yaml'}: no such spec file"]
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert _errors(empty) == [f"{empty}: the spec is empty"]
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    assert _errors(listy) == [f"{listy}: the spec must be a mapping of sections, got a list"]


def test_bad_override_is_reported_with_the_option(make_spec) -> None:
    path = make_spec(base="digits")
    assert _errors(path, ["study.n_trials"]) == [
        f"{path}: --set study.n_trials: must look like 'section.key=value'"
    ]
    assert _errors(path, ["study.name.x=1"]) == [
        f"{path}: --set study.name.x=1: study.name is not a mapping"
    ]


def test_cli_prints_one_line_per_problem_exits_2_and_writes_nothing(make_spec, tmp_path) -> None:
    path = make_spec(base="digits", study={"n_trials": 0})
    result = CliRunner().invoke(main, ["start", str(path)])
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {path}: study.n_trials: `n_trials >= 1` must hold, got n_trials=0\n"
    )
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_finetune_depth_beyond_the_base_model_is_refused_before_anything_runs(
    make_spec, tmp_path
) -> None:
    path = make_spec(
        base="digits", search_space={"finetune_depth": {"type": "int", "low": 0, "high": 9}}
    )
    result = CliRunner().invoke(main, ["start", str(path)])
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {path}: search_space.finetune_depth.high: `high <= 4` must hold "
        "(the base model has 4 weighted layers), got high=9\n"
    )
    assert not (tmp_path / "out").exists()


def test_unwritable_output_dir_and_missing_module(make_spec, tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    path = make_spec(base="digits", output={"dir": str(blocker / "sub")})
    result = CliRunner().invoke(main, ["start", str(path)])
    assert result.exit_code == 2
    assert result.stderr == f"error: {path}: output.dir: {blocker} is a file, not a directory\n"

    path = make_spec(base="fake", task={"train": "no_such_pkg.mod:train"})
    result = CliRunner().invoke(main, ["start", str(path)])
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {path}: task.train: cannot import module 'no_such_pkg.mod' "
        "(is it on PYTHONPATH?)\n"
    )


def test_debug_shows_the_traceback(make_spec) -> None:
    path = make_spec(base="digits", study={"n_trials": 0})
    result = CliRunner().invoke(main, ["--debug", "start", str(path)])
    assert result.exit_code == 2
    assert "Traceback" in result.stderr


# (an override replacing a whole search-space entry of sweeps/lr.yaml, the error lines)
REPLACED = [
    (  # a key of another parameter type: named with this type's keys, not "did you mean 'low'"
        "search_space.finetune_depth={type: categorical, choices: [1], low: 0}",
        ["search_space.finetune_depth: unknown key 'low'; allowed: type, choices"],
    ),
    (
        "search_space.finetune_depth={type: categorical, choices: [0, all, 2.5]}",
        [
            "search_space.finetune_depth.choices: must be integers for the built-in task, "
            "got 'all'",
            "search_space.finetune_depth.choices: must be integers for the built-in task, got 2.5",
        ],
    ),
    (
        "search_space.batch_size={type: float, low: 16, high: 64}",
        [
            "search_space.batch_size.type: must be 'int' or 'categorical' for the built-in task "
            "(batch_size takes integers), got 'float'"
        ],
    ),
    (
        "search_space.batch_size={type: int, low: 8, high: max}",
        [
            "search_space.batch_size.high: 'max' (all the base model's layers) only applies to "
            "finetune_depth, got 'max'"
        ],
    ),
]


@pytest.mark.parametrize(("override", "messages"), REPLACED, ids=[r[0] for r in REPLACED])
def test_built_in_task_values_are_checked_at_load(make_spec, override, messages) -> None:
    path = make_spec(base="digits")
    assert _errors(path, [override]) == [f"{path}: {m}" for m in messages]


def test_high_max_needs_the_built_in_task(make_spec) -> None:
    path = make_spec(search_space={"n": {"type": "int", "low": 0, "high": "max"}})
    assert _errors(path) == [
        f"{path}: search_space.n.high: 'max' (all the base model's layers) needs the built-in "
        "task, got task.train: give a number"
    ]


def test_numbers_are_read_as_yaml_1_2_reads_them(tmp_path: Path) -> None:
    """YAML 1.1 (PyYAML) reads `1e-3` as a string: a spec must not."""
    path = tmp_path / "spec.yaml"
    path.write_text(
        "study: {name: s, timeout: 3E2}\n"
        "search_space:\n"
        "  learning_rate: {type: categorical, choices: [1e-3, 3e-4, 1.0e3, .5, 2]}\n"
        "  batch_size: {type: categorical, choices: [16, 32]}\n"
    )
    spec = load_spec(path, ["search_space.finetune_depth={type: int, low: 0, high: 4}"])
    assert spec.search_space["learning_rate"].choices == [1e-3, 3e-4, 1000.0, 0.5, 2]
    assert [type(c) for c in spec.search_space["learning_rate"].choices] == [
        float,
        float,
        float,
        float,
        int,
    ]
    assert spec.study.timeout == 300.0
    spec = load_spec(
        REPO / "sweeps" / "lr.yaml",
        ["search_space.learning_rate.low=1e-5", "study.timeout=1e3"],
    )
    assert spec.search_space["learning_rate"].low == 1e-5
    assert spec.study.timeout == 1000.0
    # a float batch size is refused, not truncated by the training code
    assert _errors(REPO / "sweeps" / "lr.yaml", ["search_space.batch_size.choices=[8, 1e1]"]) == [
        f"{REPO / 'sweeps' / 'lr.yaml'}: search_space.batch_size.choices: must be integers for "
        "the built-in task, got 10.0"
    ]


def test_the_built_in_keys_are_the_ones_the_built_in_task_reads() -> None:
    """BUILTIN_PARAMS (what the spec accepts) and the training code must not drift apart."""
    import re

    from tbxsweep.spec._model import BUILTIN_PARAMS

    source = (REPO / "tbxsweep" / "trial" / "_finetune.py").read_text()
    read = set(re.findall(r"\bp\[\"(\w+)\"\]", source))
    assert read == set(BUILTIN_PARAMS)
