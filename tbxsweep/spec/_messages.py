"""Every spec error's wording, in one place and one shape: `<yaml.path>: <rule>, got <value>`.

The spec's own checks (pydantic validators, which the loader prefixes with the path) and the
checks that need a loaded dataset or model (in `trial/`, where that knowledge is) build their
messages from these functions, so a rule reads the same wherever it is checked. Each function
returns the part after the path; `at` puts the path in front.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tbxsweep.errors import did_you_mean

# The rules that are checked both on the spec and again where the data or model is loaded.
WEIGHTS_RULE = "'imagenet' or null"
FUNCTION_REF_RULE = "'package.module:function'"
IMAGE_SIZE_RULE = "[height, width] in pixels"
INPUT_SHAPE_RULE = "[height, width, channels]"


def yaml_path(*parts: str | int) -> str:
    """A YAML path as messages write it: keys joined by dots, list items by index
    (`yaml_path("study", "metric", 0, "name")` is `study.metric[0].name`)."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def at(path: str | Path, problem: str) -> str:
    """The whole line: where (a YAML path, or a file for a problem inside it), then what."""
    return f"{path}: {problem}"


def must_hold(rule: str, got: str, why: str = "") -> str:
    """`` `low < high` must hold (why), got low=3, high=1``: the rule, then the values."""
    return f"`{rule}` must hold{f' ({why})' if why else ''}, got {got}"


def must_be(what: str, got: object, hint: str = "") -> str:
    """`must be <what>, got <value>`; the value as Python writes it."""
    return f"must be {what}, got {got!r}{hint}"


def one_of(choices: Iterable[str], got: object, suggest: bool = True) -> str:
    """`must be one of 'a', 'b', got 'c' (did you mean 'a'?)`."""
    choices = tuple(choices)
    hint = did_you_mean(got, choices) if suggest and isinstance(got, str) else ""
    return must_be(f"one of {', '.join(map(repr, choices))}", got, hint)


def weights(got: object) -> str:
    """`task.weights`: a Keras Applications base model's pretrained weights."""
    hint = did_you_mean(got, ["imagenet"]) if isinstance(got, str) else ""
    return must_be(WEIGHTS_RULE, got, hint)


def function_ref(got: object) -> str:
    """A `package.module:function` reference (task.train, a builder, a loader)."""
    return f"must look like {FUNCTION_REF_RULE}, got {got!r}"


def fraction(name: str, got: object) -> str:
    """A fraction of the samples (`val_split`, `test_split`): strictly between 0 and 1."""
    return must_hold(f"0 < {name} < 1", f"{name}={got!r}")


def at_least(name: str, bound: int, got: object) -> str:
    """`` `subset >= 1` must hold, got subset=0``."""
    return must_hold(f"{name} >= {bound}", f"{name}={got!r}")


def class_below(n: int, dataset: object, got: int) -> str:
    """A class id the dataset does not have."""
    return must_hold(f"class < {n}", f"class={got}", f"{dataset} has {n} classes, 0..{n - 1}")


def no_training_samples(fraction: float, n: int) -> str:
    """A split fraction that leaves nothing to train on."""
    return f"{fraction} of {n} samples leaves no training samples"


def not_found(kind: str, path: str | Path) -> str:
    """`file not found: <path>` (or `directory not found`)."""
    return f"{kind} not found: {path}"


def cannot_read(what: object, exc: BaseException, how: str = "") -> str:
    """`cannot read <what>[ as <how>]: <exception type>: <its message>`."""
    return f"cannot read {what}{f' as {how}' if how else ''}: {type(exc).__name__}: {exc}"


def cannot_import(module: str, exc: BaseException | None = None) -> str:
    """A module named by a function reference that does not import."""
    if exc is None:  # the module itself is missing
        return f"cannot import module {module!r} (is it on PYTHONPATH?)"
    return f"cannot import module {module!r}: {type(exc).__name__}: {exc}"


def not_in_keras_cache(what: str, put: str, download: str, *, plural: bool = False) -> str:
    """A dataset or weights file missing from the Keras cache (trials never download)."""
    return (
        f"{what} {'are' if plural else 'is'} not in the Keras cache: put {put} "
        f"(download {download} on a machine with internet)"
    )


def within_depth(name: str, n: int, units: str, got: object, *, high_max: bool = False) -> str:
    """A fine-tune depth beyond the base model's `n` layers or blocks (`units`: "4 layers"):
    a bound or a value of `high: max`'s key, or the built-in task's `finetune_depth`."""
    why = f"high: max is the base model's {units}" if high_max else f"the base model has {units}"
    return must_hold(f"{name} <= {n}", f"{name}={got!r}", why)


def positive_ints(what: str, got: object) -> str:
    """A fixed number of sizes, each >= 1 (`[height, width] in pixels`, an input shape)."""
    return must_be(f"{what}, each an integer >= 1", got)


def cannot_open(what: str, why: str) -> str:
    """A storage (or another resource) that does not open: `cannot open <what>: <why>`."""
    return f"cannot open {what}: {why}"


def no_study(name: str, storage: str) -> str:
    """A study a reader (leaderboard, check, best) looks for in a storage that lacks it."""
    return f"no study {name!r} in {storage}"
