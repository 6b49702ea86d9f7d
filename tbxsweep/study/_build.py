"""Build Optuna objects from a validated spec."""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, Any

from tbxsweep.errors import FatalError, SpecError
from tbxsweep.paths import SweepPaths
from tbxsweep.spec import CategoricalParam, FloatParam, IntParam, Spec

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution

FINISHED_STATES = ("COMPLETE", "PRUNED")


def _optuna() -> Any:
    import optuna

    optuna.logging.set_verbosity(logging.WARNING)
    return optuna


def distributions(spec: Spec, depth_max: int | None = None) -> dict[str, BaseDistribution]:
    """The Optuna distribution of every search-space key, in the spec's order.

    Args:
        depth_max: the base model's number of weighted layers; resolves `high: max`.
    """
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out: dict[str, BaseDistribution] = {}
    for key, p in spec.search_space.items():
        if isinstance(p, FloatParam):
            out[key] = FloatDistribution(p.low, p.high, log=p.log, step=p.step)
        elif isinstance(p, IntParam):
            high = p.high
            if high == "max":
                if depth_max is None:
                    raise SpecError(f"search_space.{key}.high: 'max' needs a known base model")
                high = depth_max
            out[key] = IntDistribution(p.low, int(high), log=p.log, step=p.step)
        elif isinstance(p, CategoricalParam):
            out[key] = CategoricalDistribution(list(p.choices))
    return out


def build_sampler(spec: Spec, n_existing: int, dists: dict[str, BaseDistribution]) -> Any:
    """The spec's sampler; on resume the seed moves on so the same parameters do not repeat."""
    optuna = _optuna()
    s = spec.study.sampler
    seed = None if s.seed is None else s.seed + n_existing
    if s.name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=s.n_startup_trials)
    if s.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=s.n_startup_trials)
    if s.name == "qmc":
        return optuna.samplers.QMCSampler(seed=s.seed, scramble=s.seed is not None)
    return optuna.samplers.GridSampler(_grid(dists), seed=seed)


def _grid(dists: dict[str, BaseDistribution]) -> dict[str, list[Any]]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    grid: dict[str, list[Any]] = {}
    for key, d in dists.items():
        if isinstance(d, CategoricalDistribution):
            grid[key] = list(d.choices)
        elif isinstance(d, IntDistribution):
            grid[key] = list(range(d.low, d.high + 1, d.step))
        elif isinstance(d, FloatDistribution) and d.step is not None:
            n = round((d.high - d.low) / d.step)
            grid[key] = [round(d.low + i * d.step, 12) for i in range(n + 1)]
    return grid


def build_pruner(spec: Spec) -> Any:
    optuna = _optuna()
    p = spec.study.pruner
    if p.name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps
        )
    if p.name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=p.min_resource,
            max_resource=spec.task.epochs,
            reduction_factor=p.reduction_factor,
        )
    if p.name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=p.min_resource, reduction_factor=p.reduction_factor
        )
    return optuna.pruners.NopPruner()


def resolve_storage_url(spec: Spec) -> str:
    """The storage URL: `study.storage`, or a SQLite file in the output directory."""
    if spec.study.storage:
        return spec.study.storage
    return SweepPaths(spec.output_dir).default_storage_url()


def redact_url(url: str) -> str:
    """`postgresql://user:secret@host/db` -> `postgresql://user:***@host/db`."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def open_study(
    spec: Spec,
    storage_url: str,
    *,
    create: bool = True,
    dists: dict[str, BaseDistribution] | None = None,
) -> optuna.Study:
    """Create or continue the spec's study.

    Raises:
        FatalError: the storage cannot be opened, or `create` is false and there is no study.
    """
    optuna = _optuna()
    try:
        storage = optuna.storages.get_storage(storage_url)
    except Exception as exc:
        raise SpecError(
            f"study.storage: cannot open {redact_url(storage_url)}: {_first_line(exc)}"
        ) from None
    name = spec.study.name
    existing = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    if name not in existing and not create:
        raise FatalError(f"no study {name!r} in {redact_url(storage_url)}: start it first")
    n_existing = 0
    if name in existing:
        n_existing = len(optuna.load_study(study_name=name, storage=storage).trials)
    dists = dists if dists is not None else distributions(spec)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction=spec.study.direction,
        sampler=build_sampler(spec, n_existing, dists),
        pruner=build_pruner(spec),
        load_if_exists=True,
    )
    if n_existing == 0 and "tbxsweep_spec" not in study.user_attrs:
        study.set_user_attr("tbxsweep_spec", json.loads(spec.model_dump_json()))
    return study


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def load_existing_study(storage_url: str, study_name: str) -> Any:
    """An existing study, for reading (leaderboard, check).

    Raises:
        SpecError: the storage cannot be opened or holds no such study.
    """
    optuna = _optuna()
    try:
        storage = optuna.storages.get_storage(storage_url)
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        raise SpecError(f"no study {study_name!r} in {redact_url(storage_url)}") from None
    except Exception as exc:  # any driver error means the same to the user
        raise SpecError(f"cannot open {redact_url(storage_url)}: {_first_line(exc)}") from None
