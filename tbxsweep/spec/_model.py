"""The typed, frozen sweep spec. Raw YAML never travels past `load_spec`."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Scalar = bool | int | float | str

SAMPLERS = ("tpe", "random", "grid", "cmaes", "qmc")
PRUNERS = ("median", "hyperband", "successive_halving", "none")
BUILTIN_METRICS = ("val_accuracy", "val_loss", "accuracy", "loss")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class SamplerSpec(_Frozen):
    name: Literal["tpe", "random", "grid", "cmaes", "qmc"] = "tpe"
    seed: int | None = None
    n_startup_trials: Annotated[int, Field(ge=0)] = 10


class PrunerSpec(_Frozen):
    name: Literal["median", "hyperband", "successive_halving", "none"] = "median"
    n_warmup_steps: Annotated[int, Field(ge=0)] = 0
    n_startup_trials: Annotated[int, Field(ge=0)] = 5
    min_resource: Annotated[int, Field(ge=1)] = 1
    reduction_factor: Annotated[int, Field(ge=2)] = 3


class StudySpec(_Frozen):
    name: Annotated[str, Field(min_length=1)]
    direction: Literal["maximize", "minimize"] = "maximize"
    metric: Annotated[str, Field(min_length=1)] = "val_accuracy"
    n_trials: Annotated[int, Field(ge=1)] = 16
    timeout: Annotated[float, Field(gt=0)] | None = None
    sampler: SamplerSpec = SamplerSpec()
    pruner: PrunerSpec = PrunerSpec()
    storage: str | None = None
    repeats: Annotated[int, Field(ge=1)] = 1
    max_consecutive_failures: Annotated[int, Field(ge=1)] = 5

    @field_validator("name")
    @classmethod
    def _name_is_a_plain_word(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v):
            raise ValueError(
                f"must be letters, digits, '_', '.' or '-' (starting with a letter or digit), "
                f"got {v!r}"
            )
        return v


class FloatParam(_Frozen):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> FloatParam:
        _check_bounds(self.low, self.high, self.log, strict=True)
        if self.log and self.step is not None:
            raise ValueError("`step` cannot be used with `log: true`")
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError(f"bounds must be finite, got low={self.low}, high={self.high}")
        return self


class IntParam(_Frozen):
    type: Literal["int"]
    low: int
    high: int | Literal["max"]
    log: bool = False
    step: Annotated[int, Field(ge=1)] = 1

    @field_validator("high", mode="before")
    @classmethod
    def _high(cls, v: Any) -> Any:
        if v == "max" or (isinstance(v, int) and not isinstance(v, bool)):
            return v
        raise ValueError(f"must be an integer or 'max' (all the base model's layers), got {v!r}")

    @model_validator(mode="after")
    def _bounds(self) -> IntParam:
        if self.high != "max":
            _check_bounds(self.low, self.high, self.log, strict=False)
        if self.log and self.step != 1:
            raise ValueError("`step` cannot be used with `log: true`")
        return self


class CategoricalParam(_Frozen):
    type: Literal["categorical"]
    choices: Annotated[list[Scalar], Field(min_length=1)]

    @field_validator("choices")
    @classmethod
    def _unique(cls, v: list[Scalar]) -> list[Scalar]:
        seen: list[Scalar] = []
        for c in v:
            if c in seen:
                raise ValueError(f"choices must be unique, got {c!r} twice")
            seen.append(c)
        return v


def _check_bounds(low: float, high: float, log: bool, *, strict: bool) -> None:
    if (low >= high) if strict else (low > high):
        rel = "<" if strict else "<="
        raise ValueError(f"`low {rel} high` must hold, got low={low}, high={high}")
    if log and low <= 0:
        raise ValueError(f"`low > 0` must hold when log is true, got low={low}")


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


class TaskSpec(_Frozen):
    dataset: Literal["digits"] = "digits"
    base_model: Literal["pretrain"] = "pretrain"
    epochs: Annotated[int, Field(ge=1)] = 6
    seed: int = 0
    train: str | None = None
    trial_timeout_s: Annotated[float, Field(gt=0)] | None = None
    pretrain_epochs: Annotated[int, Field(ge=1)] = 8

    @field_validator("train")
    @classmethod
    def _entry_point(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", v):
            raise ValueError(f"must look like 'package.module:function', got {v!r}")
        return v


class ResourcesSpec(_Frozen):
    gpus: Literal["auto", "none"] | tuple[int, ...] = "auto"
    trials_per_gpu: Annotated[int, Field(ge=1)] = 1
    n_jobs: Literal["auto"] | int = "auto"
    grace_s: Annotated[float, Field(ge=0)] = 30.0

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpus(cls, v: Any) -> Any:
        if v in ("auto", "none"):
            return v
        if v is None or v is False:
            return "none"
        if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            return (v,)
        if (
            isinstance(v, list)
            and v
            and all(isinstance(g, int) and not isinstance(g, bool) and g >= 0 for g in v)
        ):
            if len(set(v)) != len(v):
                raise ValueError(f"GPU ids must be unique, got {v}")
            return tuple(v)
        raise ValueError(f"must be 'auto', 'none' or a list of GPU ids like [0, 1], got {v!r}")

    @field_validator("n_jobs", mode="before")
    @classmethod
    def _n_jobs(cls, v: Any) -> Any:
        if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            return v
        raise ValueError(f"must be 'auto' or an integer >= 1, got {v!r}")


class OutputSpec(_Frozen):
    dir: Path | None = None


class LoggingSpec(_Frozen):
    histograms: bool = False


class Spec(_Frozen):
    """A whole sweep spec, validated and frozen."""

    study: StudySpec
    search_space: Annotated[dict[str, Param], Field(min_length=1)]
    task: TaskSpec = TaskSpec()
    resources: ResourcesSpec = ResourcesSpec()
    output: OutputSpec = OutputSpec()
    logging: LoggingSpec = LoggingSpec()

    @field_validator("search_space")
    @classmethod
    def _keys_are_names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in v:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise ValueError(f"keys must be identifiers, got {key!r}")
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> Spec:
        problems: list[str] = []
        if self.task.train is None and self.study.metric not in BUILTIN_METRICS:
            problems.append(
                f"study.metric: must be one of {', '.join(map(repr, BUILTIN_METRICS))} for the "
                f"built-in task, got {self.study.metric!r}"
            )
        if self.study.sampler.name == "grid":
            for key, p in self.search_space.items():
                if isinstance(p, FloatParam) and p.step is None:
                    problems.append(
                        f"search_space.{key}: the grid sampler needs `step` on float "
                        "parameters (or use type: categorical)"
                    )
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def output_dir(self) -> Path:
        return self.output.dir if self.output.dir is not None else Path("results") / self.study.name
