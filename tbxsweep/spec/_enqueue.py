"""`study.enqueue`: known configurations, checked against the search space at load time.

Each entry maps search-space keys to values (a partial one leaves the rest to the sampler).
Every problem is one line naming the entry's YAML path (`study.enqueue[1].learning_rate`),
the rule that must hold and the value. The search-space entries are read by their `type`
(float, int, categorical) so that this module needs nothing from `_model` at run time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tbxsweep.errors import did_you_mean
from tbxsweep.spec import _messages as msg

# A value on a float `step` grid is accepted within this fraction of a step: YAML's
# decimal 0.3 is not exactly 0.1 + 2 * 0.1 in binary.
_STEP_TOLERANCE = 1e-9


def check_entries(v: Any) -> tuple[dict[str, Any], ...]:
    """The shape of `study.enqueue`: a list of non-empty mappings keyed by names.

    Raises:
        ValueError: one line per problem, each starting with its YAML path.
    """
    if v is None:
        return ()
    if not isinstance(v, (list, tuple)):
        raise ValueError(
            f"study.enqueue: must be a list of configurations (mappings of search_space keys "
            f"to values), got {_kind(v)}"
        )
    problems: list[str] = []
    for i, entry in enumerate(v):
        at = msg.yaml_path("study", "enqueue", i)
        if not isinstance(entry, dict):
            problems.append(
                f"{at}: must be a mapping of search_space keys to values, got {_kind(entry)}"
            )
        elif not entry:
            problems.append(f"{at}: must name at least one search_space key, got {{}}")
        else:
            problems += [
                f"{at}: keys must be search_space names, got {_kind(k)}"
                for k in entry
                if not isinstance(k, str)
            ]
    if problems:
        raise ValueError("\n".join(problems))
    return tuple(dict(entry) for entry in v)


def entries_problems(
    entries: tuple[dict[str, Any], ...], space: Mapping[str, Any], sampler: str
) -> list[str]:
    """Every problem of the entries against the search space, one line each."""
    if entries and sampler == "grid":
        return [
            "study.enqueue: does not apply with sampler grid (it runs every grid point itself, "
            f"so an enqueued one would run twice), got {len(entries)} configuration(s): drop "
            "study.enqueue or use another sampler"
        ]
    problems: list[str] = []
    seen: dict[tuple[tuple[str, Any], ...], int] = {}
    for i, entry in enumerate(entries):
        own = entry_problems(i, entry, space)
        problems += own
        if own:
            continue
        key = tuple(sorted((k, _same(v, space[k])) for k, v in entry.items()))
        if key in seen:
            problems.append(
                f"study.enqueue[{i}]: the same configuration as study.enqueue[{seen[key]}] "
                f"(each runs once), got {_entry_text(entry)}"
            )
        seen.setdefault(key, i)
    return problems


def entry_problems(i: int, entry: Mapping[str, Any], space: Mapping[str, Any]) -> list[str]:
    """The problems of one entry: unknown keys, then each value against its domain."""
    problems: list[str] = []
    for key, value in entry.items():
        at = msg.yaml_path("study", "enqueue", i)
        if key not in space:
            hint = did_you_mean(key, space)
            problems.append(
                f"{at}: unknown key {key!r}{hint}"
                + ("" if hint else f"; search_space has {', '.join(space)}")
            )
            continue
        problem = value_problem(key, value, space[key])
        if problem:
            problems.append(f"{at}.{key}: {problem}")
    return problems


def value_problem(key: str, value: Any, p: Any) -> str | None:
    """Why `value` is outside the domain of the search-space entry `p`, else None."""
    where = f"search_space.{key}"
    if p.type == "categorical":
        if _choice(value, p.choices) is not None:
            return None
        hint = did_you_mean(value, [c for c in p.choices if isinstance(c, str)])
        choices = ", ".join(map(repr, p.choices))
        return f"must be one of {where}.choices: {choices}, got {value!r}{hint}"
    if p.type == "int" and not _is_int(value):
        return f"must be an integer ({where} is type: int), got {_kind(value)}"
    if p.type == "float" and not (_is_number(value) and math.isfinite(value)):
        return f"must be a finite number ({where} is type: float), got {_kind(value)}"
    high = None if p.high == "max" else p.high
    if value < p.low or (high is not None and value > high):
        rule = f"{p.low} <= {key} <= {high}" if high is not None else f"{key} >= {p.low}"
        return msg.must_hold(rule, f"{key}={value!r}", where)
    step = p.step if p.type == "float" else (None if p.step == 1 else p.step)
    if step is not None and not _on_grid(value, p.low, step):
        return msg.must_hold(
            f"({key} - {p.low}) % {step} == 0", f"{key}={value!r}", f"{where}.step: {step}"
        )
    return None


def depth_problems(entries: tuple[dict[str, Any], ...], key: str, n: int, units: str) -> list[str]:
    """Enqueued values of a `high: max` key above the base model's depth `n`, found once the
    depth is known (`resolve_space`): the same rule as the search-space bound."""
    return [
        f"{msg.yaml_path('study', 'enqueue', i, key)}: "
        + msg.within_depth(key, n, units, entry[key], high_max=True)
        for i, entry in enumerate(entries)
        if _is_int(entry.get(key)) and entry[key] > n
    ]


def enqueue_params(
    entries: tuple[dict[str, Any], ...], space: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Checked entries as Optuna stores parameters: a float as a float (`1` is not `1.0`
    to a comparison by type), a categorical value as its choice."""
    return [{k: _same(v, space[k]) for k, v in entry.items()} for entry in entries]


def _same(value: Any, p: Any) -> Any:
    if p.type == "float":
        return float(value)
    if p.type == "categorical":
        return _choice(value, p.choices)
    return value


def _choice(value: Any, choices: list[Any]) -> Any:
    """The choice equal to `value`, a boolean only for a boolean and a string only for a
    string (`True == 1` in Python, but not in a spec)."""
    for c in choices:
        if isinstance(c, bool) != isinstance(value, bool):
            continue
        if isinstance(c, str) != isinstance(value, str):
            continue
        if c == value:
            return c
    return None


def _on_grid(value: float, low: float, step: float) -> bool:
    k = (value - low) / step
    return abs(k - round(k)) <= _STEP_TOLERANCE * max(1.0, abs(k))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _entry_text(entry: Mapping[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {v!r}" for k, v in entry.items()) + "}"


def _kind(value: Any) -> str:
    names = {
        int: "the integer",
        float: "the number",
        bool: "the boolean",
        str: "the string",
        list: "a list",
        dict: "a mapping",
    }
    if value is None:
        return "null"
    return f"{names.get(type(value), type(value).__name__)} {value!r}"
