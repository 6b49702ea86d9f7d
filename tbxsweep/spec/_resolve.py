"""`high: max` resolved against the base model, and the bounds that need its depth checked:
the one place that does either, before anything is written."""

from __future__ import annotations

from tbxsweep.errors import SpecError
from tbxsweep.spec import _messages as msg
from tbxsweep.spec._enqueue import depth_problems
from tbxsweep.spec._model import CategoricalParam, IntParam, Spec

# As tbxsweep.trial._describe words them (the orchestrator does not import trial code).
_UNIT_WORDS = {"layer": "weighted layers", "block": "blocks"}


def resolve_space(spec: Spec, depth_max: int | None, where: str) -> Spec:
    """The spec with `high: max` replaced by the base model's depth, and every bound that
    needs that depth checked: the one place that does either, before anything is written.

    Raises:
        SpecError: a bound the base model cannot meet, one line per problem.
    """
    n = depth_max
    units = f"{n} {_UNIT_WORDS[spec.task.finetune_unit]}"
    problems: list[str] = []
    space = dict(spec.search_space)
    for key, p in spec.search_space.items():
        if isinstance(p, IntParam) and p.high == "max":
            if n is None:  # the spec refuses 'max' with task.train; a task without depth
                problems.append(f"search_space.{key}.high: 'max' needs a base model, got none")
                continue
            if p.low > n:
                rule = msg.within_depth("low", n, units, p.low, high_max=True)
                problems.append(f"search_space.{key}.low: {rule}")
            space[key] = p = p.model_copy(update={"high": n})
            problems += depth_problems(spec.study.enqueue, key, n, units)
        if key != "finetune_depth" or n is None or spec.task.train is not None:
            continue
        if isinstance(p, IntParam) and int(p.high) > n:
            rule = msg.within_depth("high", n, units, p.high)
            problems.append(f"search_space.{key}.high: {rule}")
        if isinstance(p, CategoricalParam):
            problems += [
                f"search_space.{key}.choices: {msg.within_depth('choice', n, units, c)}"
                for c in p.choices
                if isinstance(c, int) and c > n
            ]
    if problems:
        raise SpecError([f"{where}: {line}" for line in problems])
    return spec.model_copy(update={"search_space": space})


def swept_depths(spec: Spec) -> tuple[int, ...]:
    """Every `finetune_depth` a trial of this (resolved) spec may train at: the search
    space's values and the enqueued ones, in order; () where the depth is not swept or
    `high: max` is not resolved yet.

    The feature cache builds the cuts of all of them in one pass (trial/_cache.py).
    """
    p = spec.search_space.get("finetune_depth")
    values: set[int] = set()
    if isinstance(p, IntParam):
        if p.high == "max":
            return ()
        values.update(range(p.low, int(p.high) + 1, p.step))
    elif isinstance(p, CategoricalParam):
        values.update(c for c in p.choices if isinstance(c, int) and not isinstance(c, bool))
    else:
        return ()
    for entry in spec.study.enqueue:
        d = entry.get("finetune_depth")
        if isinstance(d, int) and not isinstance(d, bool):
            values.add(d)
    return tuple(sorted(values))
