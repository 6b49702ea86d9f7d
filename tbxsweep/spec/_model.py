"""The typed, frozen sweep spec. Raw YAML never travels past `load_spec`."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from tbxsweep.errors import did_you_mean
from tbxsweep.spec import _messages as msg
from tbxsweep.spec._enqueue import check_entries, entries_problems

Scalar = bool | int | float | str

SAMPLERS = ("tpe", "random", "grid", "cmaes", "qmc")
PRUNERS = ("median", "hyperband", "successive_halving", "none")
BUILTIN_METRICS = ("val_accuracy", "val_loss", "accuracy", "loss")
# The search-space keys the built-in task reads (tbxsweep/trial/_finetune.py; a test keeps
# the two in step), each with what its values must be: (integers only, the rule's operator,
# the bound). Any other key would be sampled, logged and silently ignored by training.
BUILTIN_PARAMS: dict[str, tuple[bool, str, int]] = {
    "learning_rate": (False, ">", 0),
    "batch_size": (True, ">=", 1),
    "finetune_depth": (True, ">=", 0),
}


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


# What every trial costs, known without the trial reporting it: the seconds its run took
# and its model's trainable parameters. Objectives and constraints may name them.
COST_METRICS = ("seconds", "trainable_params")


class Objective(_Frozen):
    """One entry of `study.metric` given as a list: a metric and its direction."""

    name: Annotated[str, Field(min_length=1)]
    direction: Literal["maximize", "minimize"]


class Bound(_Frozen):
    """`study.constraints.<metric>`: `{min: a}`, `{max: b}` or both (inclusive)."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _one_finite_bound(self) -> Bound:
        if self.min is None and self.max is None:
            raise ValueError("must have `min` or `max` (or both), got neither")
        for key, v in (("min", self.min), ("max", self.max)):
            if v is not None and not math.isfinite(v):
                raise ValueError(f"bounds must be finite, got {key}={v}")
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise ValueError(msg.must_hold("min < max", f"min={self.min}, max={self.max}"))
        return self

    def excess(self, value: float) -> float:
        """Optuna's constraint value: how far `value` is outside the bounds (<= 0: inside)."""
        over = [value - self.max] if self.max is not None else []
        under = [self.min - value] if self.min is not None else []
        return max(over + under)


def _objective_list(v: list[Any]) -> list[Any]:
    """The first problem of `study.metric` given as a list, as the one line it reports."""
    if not v:
        raise ValueError("study.metric: must not be empty, got []")
    for i, item in enumerate(v):
        at = msg.yaml_path("study", "metric", i)
        if not isinstance(item, dict):
            raise ValueError(
                f"{at}: must be a mapping like {{name: val_accuracy, direction: maximize}}, "
                f"got {_kind(item)}"
            )
        extra = [k for k in item if k not in ("name", "direction")]
        if extra:
            hint = did_you_mean(str(extra[0]), ("name", "direction"))
            raise ValueError(
                f"{at}: unknown key {str(extra[0])!r}{hint or '; allowed: name, direction'}"
            )
        for key in ("name", "direction"):
            if key not in item:
                raise ValueError(f"{at}.{key}: is required")
        if not isinstance(item["name"], str) or not item["name"]:
            raise ValueError(f"{at}.name: must be a metric name, got {_kind(item['name'])}")
        direction = item["direction"]
        if direction not in ("maximize", "minimize"):
            raise ValueError(f"{at}.direction: {msg.one_of(('maximize', 'minimize'), direction)}")
    names = [item["name"] for item in v]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice is not None:
        raise ValueError(f"study.metric: objective names must be unique, got {twice!r} twice")
    return v


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
    stale_after_s: Annotated[float, Field(gt=0)] = 120.0
    # How many of the best trials are evaluated once on the test split when the sweep
    # ends; None: 1 where the task has a test split, else 0.
    test_top_k: Annotated[int, Field(ge=0)] | None = None
    # Known configurations run before the sampler's own, in this order: mappings of
    # search-space keys to values (the sampler fills the keys left out). Their values are
    # checked against search_space by Spec (spec/_enqueue.py).
    enqueue: tuple[dict[str, Any], ...] = ()
    # `metric` given as a list: every objective with its direction (a multi-objective
    # study); `metric` and `direction` then hold the first. Empty for one metric.
    objectives: tuple[Objective, ...] = ()
    # Bounds on cost metrics or recorded metrics: a trial outside them is infeasible.
    constraints: dict[str, Bound] = {}

    @model_validator(mode="before")
    @classmethod
    def _objectives_from_metric(cls, raw: Any) -> Any:
        """`metric: [{name, direction}, ...]` -> objectives, with `metric` and `direction`
        the first objective's (what single-objective code reads: the best epoch, the
        pruner's value, the "best so far")."""
        if not isinstance(raw, dict) or not isinstance(raw.get("metric"), list):
            return raw
        goals = _objective_list(raw["metric"])
        # `direction` may stay (a spec turned multi-objective) if it agrees with the first.
        if raw.get("direction", goals[0]["direction"]) != goals[0]["direction"]:
            raise ValueError(
                "study.direction: each objective in study.metric has its own direction, got "
                f"direction={raw['direction']!r} and {goals[0]['direction']!r} for "
                f"{goals[0]['name']!r}: drop study.direction"
            )
        return {
            # Optuna prunes single-objective studies only: no pruner unless one is asked
            # for (which Spec then refuses with one line).
            "pruner": {"name": "none"} if len(goals) > 1 else {},
            **raw,
            "metric": goals[0]["name"],
            "direction": goals[0]["direction"],
            "objectives": goals,
        }

    @model_validator(mode="after")
    def _objectives_agree(self) -> StudySpec:
        # Only a stored spec (or a hand-written `objectives:`) reaches here with both.
        first = self.objectives[0] if self.objectives else None
        if first is not None and (first.name, first.direction) != (self.metric, self.direction):
            raise ValueError(
                "study.objectives: give the objectives as a list in study.metric, got "
                f"objectives starting with {first.name!r} ({first.direction}) beside "
                f"metric {self.metric!r} ({self.direction})"
            )
        return self

    @property
    def goals(self) -> tuple[Objective, ...]:
        """Every objective in order: `objectives`, or the one `metric` and `direction`."""
        return self.objectives or (Objective(name=self.metric, direction=self.direction),)

    @property
    def multi_objective(self) -> bool:
        return len(self.goals) > 1

    @field_validator("enqueue", mode="before")
    @classmethod
    def _enqueue_shape(cls, v: Any) -> Any:
        return check_entries(v)

    @model_validator(mode="after")
    def _enqueue_fits_n_trials(self) -> StudySpec:
        n = len(self.enqueue)
        if n > self.n_trials:
            raise ValueError(
                f"study.enqueue: `len(enqueue) <= n_trials` must hold (each configuration is "
                f"one trial), got {n} configurations, n_trials={self.n_trials}"
            )
        return self

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
        # `high: max` is checked once the base model's depth is known (spec.resolve_space).
        _check_bounds(self.low, None if self.high == "max" else self.high, self.log, strict=False)
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


def _check_bounds(low: float, high: float | None, log: bool, *, strict: bool) -> None:
    if high is not None and ((low >= high) if strict else (low > high)):
        rel = "<" if strict else "<="
        raise ValueError(msg.must_hold(f"low {rel} high", f"low={low}, high={high}"))
    if log and low <= 0:
        raise ValueError(f"`low > 0` must hold when log is true, got low={low}")


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


# --- task: dataset and base model -----------------------------------------------------------

DATASET_NAMES = ("digits", "cifar10", "cifar100", "mnist", "fashion_mnist")
DATASET_KEYS = ("npz", "images", "loader")
# The Keras Applications a base model can be built from; tbxsweep.trial.backbones.APPLICATIONS
# holds how to build each (a test keeps the two in step).
APPLICATION_NAMES = (
    "mobilenet_v2",
    *(f"efficientnet_b{i}" for i in range(8)),
    *(f"resnet{n}" for n in (50, 101, 152)),
    *(f"resnet{n}_v2" for n in (50, 101, 152)),
)
PRETRAIN_INPUT_SHAPE = (8, 8, 1)
# How many classes each named dataset has (cifar100: its 100 fine labels).
DATASET_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100, "mnist": 10, "fashion_mnist": 10}
# digits' default transfer task: pretrain on 0-4, fine-tune on 5-9.
DIGITS_PRETRAIN_CLASSES = (0, 1, 2, 3, 4)
DIGITS_FINETUNE_CLASSES = (5, 6, 7, 8, 9)
# digits has no test split of its own: this fraction is held out (stratified, fixed seed).
DIGITS_TEST_SPLIT = 0.2
_REF = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
_DATASET_RULE = (
    f"must be one of {', '.join(map(repr, DATASET_NAMES))} "
    "or a mapping with one of the keys 'npz', 'images', 'loader'"
)
_BASE_MODEL_RULE = (
    "must be 'pretrain', a Keras Applications name (mobilenet_v2, efficientnet_b0..b7, "
    "resnet50/101/152, resnet50_v2/101_v2/152_v2), a path ending in .keras "
    "or a mapping {builder: 'package.module:function'}"
)


def _check_ref(v: str) -> str:
    if not _REF.fullmatch(v):
        raise ValueError(msg.function_ref(v))
    return v


def _check_val_split(v: float) -> float:
    if not 0 < v < 1:
        raise ValueError(msg.fraction("val_split", v))
    return v


def _check_test_split(v: float) -> float:
    if not 0 < v < 1:
        raise ValueError(msg.fraction("test_split", v))
    return v


def _check_classes(v: Any) -> Any:
    ok = (
        isinstance(v, (list, tuple))
        and len(v) >= 2
        and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in v)
    )
    if not ok:
        raise ValueError(f"must be a list of at least 2 class ids (integers >= 0), got {v!r}")
    twice = sorted({c for c in v if list(v).count(c) > 1})
    if twice:
        raise ValueError(f"class ids must be unique, got {', '.join(map(str, twice))} twice")
    return tuple(v)


Ref = Annotated[str, AfterValidator(_check_ref)]
ValSplit = Annotated[float, AfterValidator(_check_val_split)]
TestSplit = Annotated[float, AfterValidator(_check_test_split)]


def _positive_ints(v: Any, n: int, what: str) -> Any:
    ok = (
        isinstance(v, (list, tuple))
        and len(v) == n
        and all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v)
    )
    if not ok:
        raise ValueError(msg.positive_ints(what, v))
    return tuple(v)


def _keys(v: dict[Any, Any]) -> str:
    return ", ".join(repr(str(k)) for k in v) or "none"


def _key_hint(v: dict[Any, Any], expected: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the first key of `v` close to an expected one, else ''."""
    options = list(expected)
    return next((h for k in v if (h := did_you_mean(str(k), options))), "")


class NpzDataset(_Frozen):
    """`{npz: path}`: arrays x_train, y_train and x_val, y_val (or `val_split` of x_train)."""

    npz: Annotated[str, Field(min_length=1)]
    val_split: ValSplit | None = None


class ImageFolderDataset(_Frozen):
    """`{images: dir, image_size: [h, w]}`: one sub-folder of images per class."""

    images: Annotated[str, Field(min_length=1)]
    image_size: tuple[int, int]
    val_split: ValSplit = 0.2

    @field_validator("image_size", mode="before")
    @classmethod
    def _size(cls, v: Any) -> Any:
        return _positive_ints(v, 2, msg.IMAGE_SIZE_RULE)


class LoaderDataset(_Frozen):
    """`{loader: "package.module:function"}`: the user's function returns the data."""

    loader: Ref


class BuilderModel(_Frozen):
    """`{builder: "package.module:function"}`: called as `function(input_shape=(h, w, c))`."""

    builder: Ref


def _dataset_tag(v: Any) -> str | None:
    if isinstance(v, str):
        return "dataset[name]"
    if isinstance(v, NpzDataset) or (isinstance(v, dict) and "npz" in v):
        return "dataset[npz]"
    if isinstance(v, ImageFolderDataset) or (isinstance(v, dict) and "images" in v):
        return "dataset[images]"
    if isinstance(v, LoaderDataset) or (isinstance(v, dict) and "loader" in v):
        return "dataset[loader]"
    return None


def _base_model_tag(v: Any) -> str | None:
    if isinstance(v, str):
        return "base_model[name]"
    if isinstance(v, (BuilderModel, dict)):
        return "base_model[builder]"
    return None


# The tags name the union member in error locations; the loader drops them from YAML paths
# (they hold "[") and uses them to suggest the member's own keys for a typo.
DatasetSource = Annotated[
    Annotated[
        Literal["digits", "cifar10", "cifar100", "mnist", "fashion_mnist"], Tag("dataset[name]")
    ]
    | Annotated[NpzDataset, Tag("dataset[npz]")]
    | Annotated[ImageFolderDataset, Tag("dataset[images]")]
    | Annotated[LoaderDataset, Tag("dataset[loader]")],
    Discriminator(_dataset_tag),
]
BaseModelSource = Annotated[
    Annotated[str, Tag("base_model[name]")] | Annotated[BuilderModel, Tag("base_model[builder]")],
    Discriminator(_base_model_tag),
]


def _check_dataset(v: Any) -> Any:
    if isinstance(v, str) and v not in DATASET_NAMES:
        raise ValueError(f"{_DATASET_RULE}, got {v!r}{did_you_mean(v, DATASET_NAMES)}")
    if isinstance(v, dict):
        kinds = [k for k in DATASET_KEYS if k in v]
        if not kinds:
            raise ValueError(
                "must have one of the keys 'npz', 'images', 'loader', "
                f"got a mapping with keys {_keys(v)}{_key_hint(v, DATASET_KEYS)}"
            )
        if len(kinds) > 1:
            raise ValueError(
                f"must have only one of the keys 'npz', 'images', 'loader', "
                f"got {', '.join(map(repr, kinds))}"
            )
    elif not isinstance(v, (str, BaseModel)):
        raise ValueError(f"{_DATASET_RULE}, got {_kind(v)}")
    return v


class PretrainSpec(_Frozen):
    """`task.pretrain`: the source task that `base_model: pretrain` trains once per sweep.

    Every key has a default: digits pretrains on 0-4; another dataset on the classes that
    `task.classes` leaves out (or the whole of another dataset).
    """

    dataset: DatasetSource | None = None  # None: task.dataset
    classes: tuple[int, ...] | None = None  # None: see TaskSpec.pretrain_classes
    builder: Ref | None = None  # None: the digits CNN for digits, else the classic CNN
    batch_size: Annotated[int, Field(ge=1)] = 32
    learning_rate: Annotated[float, Field(gt=0)] = 1e-3

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset(cls, v: Any) -> Any:
        return None if v is None else _check_dataset(v)

    @field_validator("classes", mode="before")
    @classmethod
    def _classes(cls, v: Any) -> Any:
        return None if v is None else _check_classes(v)


class TaskSpec(_Frozen):
    """What each trial trains: the built-in fine-tuning task, or the user's `train` function.

    The built-in task fine-tunes `base_model` on `dataset`; `task.train` replaces it
    entirely (and the dataset and base-model keys are then not used).
    """

    dataset: DatasetSource = "digits"
    # The classes fine-tuned on, relabelled 0..n-1 in this order; None: digits 5-9, else all
    # (or those that task.pretrain.classes leaves out, on the same dataset).
    classes: tuple[int, ...] | None = None
    subset: Annotated[int, Field(ge=1)] | None = None
    base_model: BaseModelSource = "pretrain"
    weights: Literal["imagenet"] | None = None
    input_shape: tuple[int, int, int] | None = None
    finetune_unit: Literal["layer", "block"] = "layer"
    head_epochs: Annotated[int, Field(ge=0)] = 0
    epochs: Annotated[int, Field(ge=1)] = 6
    seed: int = 0
    # Keras datasets: the fraction of the training split that validates (stratified,
    # drawn with `seed`); their test split is never read.
    val_split: ValSplit = 0.1
    # The fraction held out as the test split where the data has none of its own: digits
    # (None: 0.2), an image folder or an .npz without x_test/y_test (None: no test split).
    test_split: TestSplit | None = None
    train: str | None = None
    trial_timeout_s: Annotated[float, Field(gt=0)] | None = None
    checkpoint_every_s: Annotated[float, Field(ge=0)] = 30.0
    pretrain_epochs: Annotated[int, Field(ge=1)] = 8
    pretrain: PretrainSpec = PretrainSpec()
    mixed_precision: bool = False
    jit_compile: bool = False
    # The built-in task trains on cached outputs of the frozen part of the base where that
    # is the same training (trial/_cache.py); at most feature_cache_mb of files in cache/.
    feature_cache: bool = True
    feature_cache_mb: Annotated[float, Field(gt=0)] = 4096.0

    @field_validator("train")
    @classmethod
    def _entry_point(cls, v: str | None) -> str | None:
        return None if v is None else _check_ref(v)

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset(cls, v: Any) -> Any:
        return _check_dataset(v)

    @field_validator("classes", mode="before")
    @classmethod
    def _classes(cls, v: Any) -> Any:
        return None if v is None else _check_classes(v)

    @field_validator("base_model", mode="before")
    @classmethod
    def _base_model(cls, v: Any) -> Any:
        if isinstance(v, str):
            if v == "pretrain" or v in APPLICATION_NAMES or (v.endswith(".keras") and len(v) > 6):
                return v
            options = ("pretrain", *APPLICATION_NAMES)
            raise ValueError(f"{_BASE_MODEL_RULE}, got {v!r}{did_you_mean(v, options)}")
        if isinstance(v, dict) and "builder" not in v:
            raise ValueError(
                f"must have the key 'builder' when it is a mapping, "
                f"got a mapping with keys {_keys(v)}{_key_hint(v, ['builder'])}"
            )
        if not isinstance(v, (dict, BaseModel)):
            raise ValueError(f"{_BASE_MODEL_RULE}, got {_kind(v)}")
        return v

    @field_validator("weights", mode="before")
    @classmethod
    def _weights(cls, v: Any) -> Any:
        if v is None or v == "imagenet":
            return v
        raise ValueError(msg.weights(v))

    @field_validator("input_shape", mode="before")
    @classmethod
    def _input_shape(cls, v: Any) -> Any:
        return None if v is None else _positive_ints(v, 3, msg.INPUT_SHAPE_RULE)

    @model_validator(mode="after")
    def _fits_together(self) -> TaskSpec:
        """Keys that only make sense together; one error per key, at that key's path."""
        if self.train is not None:
            return self
        problems: list[tuple[str, str, Any]] = []
        base = self.base_model
        problems += self._class_problems()
        problems += self._test_split_problems()
        if base == "pretrain":
            problems += self._pretrain_problems()
            digits_cnn = self.pretrain_dataset == "digits" and self.pretrain.builder is None
            if digits_cnn and self.input_shape not in (None, PRETRAIN_INPUT_SHAPE):
                problems.append(
                    (
                        "input_shape",
                        "must be [8, 8, 1] or left out with base_model 'pretrain', "
                        f"got {list(self.input_shape or ())}",
                        self.input_shape,
                    )
                )
            if self.finetune_unit == "block":
                problems.append(
                    (
                        "finetune_unit",
                        "'block' needs a base model made of residual blocks (a Keras "
                        "Applications name), got base_model 'pretrain': use 'layer'",
                        self.finetune_unit,
                    )
                )
        elif "pretrain" in self.model_fields_set:
            problems.append(
                (
                    "pretrain",
                    "only applies with base_model 'pretrain', got base_model "
                    f"{_label(base)}: drop task.pretrain",
                    None,
                )
            )
        if self.weights == "imagenet" and base not in APPLICATION_NAMES:
            problems.append(
                (
                    "weights",
                    "'imagenet' needs a Keras Applications base_model such as 'mobilenet_v2', "
                    f"got base_model {_label(base)}",
                    self.weights,
                )
            )
        if problems:
            raise ValidationError.from_exception_data(
                "TaskSpec",
                [
                    InitErrorDetails(
                        type=PydanticCustomError("value_error", "{error}", {"error": msg}),
                        loc=tuple(key.split(".")),
                        input=value,
                    )
                    for key, msg, value in problems
                ],
            )
        return self

    # -- the source and target tasks --------------------------------------------------------
    @property
    def pretrain_dataset(self) -> DatasetSource:
        """The dataset `base_model: pretrain` pretrains on (task.pretrain.dataset, else
        task.dataset)."""
        return self.pretrain.dataset if self.pretrain.dataset is not None else self.dataset

    @property
    def pretrain_on_same_dataset(self) -> bool:
        return self.pretrain_dataset == self.dataset

    def finetune_classes(self, n: int | None) -> tuple[int, ...] | None:
        """The classes fine-tuned on, in label order; None: all `n` of them.

        `n` is the dataset's class count (None while unknown, e.g. before an .npz is read).
        """
        if self.classes is not None:
            return self.classes
        same = self.base_model == "pretrain" and self.pretrain_on_same_dataset
        if same and self.pretrain.classes is not None and n is not None:
            return tuple(c for c in range(n) if c not in self.pretrain.classes)
        if self.dataset == "digits":
            return DIGITS_FINETUNE_CLASSES
        return None

    def pretrain_classes(self, n: int | None) -> tuple[int, ...] | None:
        """The classes `base_model: pretrain` pretrains on; None: all `n` of them."""
        if self.pretrain.classes is not None:
            return self.pretrain.classes
        if not self.pretrain_on_same_dataset:
            return DIGITS_PRETRAIN_CLASSES if self.pretrain_dataset == "digits" else None
        if self.dataset == "digits" and self.classes is None:
            return DIGITS_PRETRAIN_CLASSES
        if self.classes is not None and n is not None:
            return tuple(c for c in range(n) if c not in self.classes)
        return None

    @property
    def has_test_split(self) -> bool | None:
        """Whether the data has a test split (None: unknown until an .npz is read)."""
        ds = self.dataset
        if isinstance(ds, str) or self.test_split is not None:
            return True
        if isinstance(ds, NpzDataset):
            return None  # x_test/y_test in the file
        return False

    def _class_problems(self) -> list[tuple[str, str, Any]]:
        problems: list[tuple[str, str, Any]] = []
        checks = [("classes", self.dataset, self.classes)]
        if self.base_model == "pretrain":
            checks.append(("pretrain.classes", self.pretrain_dataset, self.pretrain.classes))
        for key, ds, classes in checks:
            n = DATASET_CLASSES.get(ds) if isinstance(ds, str) else None
            beyond = [c for c in classes or () if n is not None and c >= n]
            if beyond and n is not None:
                problems.append(
                    (
                        key,
                        msg.class_below(n, ds, beyond[0]),
                        classes,
                    )
                )
        return problems

    def _pretrain_problems(self) -> list[tuple[str, str, Any]]:
        if not self.pretrain_on_same_dataset:
            return []
        if self.classes is None and self.pretrain.classes is None:
            if self.dataset == "digits":
                return []  # digits' default transfer task: 0-4, then 5-9
            return [
                (
                    "classes",
                    "is required with base_model 'pretrain' on one dataset "
                    f"({_label(self.dataset)}): give the classes to fine-tune on (the others "
                    "pretrain the base), e.g. classes: [5, 6, 7, 8, 9], or task.pretrain.dataset",
                    None,
                )
            ]
        both = sorted(set(self.classes or ()) & set(self.pretrain.classes or ()))
        if both:
            return [
                (
                    "pretrain.classes",
                    "must not overlap task.classes on the same dataset (the base would "
                    f"have seen the classes it is fine-tuned on), got {_ids(both)} in both",
                    self.pretrain.classes,
                )
            ]
        return []

    def _test_split_problems(self) -> list[tuple[str, str, Any]]:
        ds = self.dataset
        if self.test_split is None:
            return []
        if isinstance(ds, str) and ds != "digits":
            return [
                (
                    "test_split",
                    f"{ds} has a test split of its own (never read by a trial), "
                    f"got test_split={self.test_split}: drop task.test_split",
                    self.test_split,
                )
            ]
        if isinstance(ds, LoaderDataset):
            return [
                (
                    "test_split",
                    f"cannot be held out of a loader's data (dataset {_label(ds)}), "
                    f"got test_split={self.test_split}: drop task.test_split",
                    self.test_split,
                )
            ]
        return []

    @property
    def base_kind(self) -> str:
        """'pretrain', an application name, 'file' (a .keras path) or 'builder'."""
        if isinstance(self.base_model, BuilderModel):
            return "builder"
        if self.base_model == "pretrain" or self.base_model in APPLICATION_NAMES:
            return self.base_model
        return "file"


def _label(v: Any) -> str:
    """A dataset or base model as the spec writes it, for messages."""
    if isinstance(v, BaseModel):
        key, value = next(iter(v.model_dump().items()))
        return f"{{{key}: {value}}}"
    return repr(v)


def _ids(classes: Iterable[int]) -> str:
    return ", ".join(map(str, classes))


def _kind(value: Any) -> str:
    names = {int: "the integer", float: "the number", bool: "the boolean", list: "a list"}
    if value is None:
        return "null"
    return f"{names.get(type(value), type(value).__name__)} {value!r}"


def _gpu_id(v: Any) -> bool:
    """An index (0, 1, ...) or a UUID as CUDA_VISIBLE_DEVICES takes it ("GPU-…", "MIG-…")."""
    if isinstance(v, str):
        return bool(re.fullmatch(r"(GPU|MIG)-[\w./-]+", v))
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


class ResourcesSpec(_Frozen):
    gpus: Literal["auto", "none"] | tuple[int | str, ...] = "auto"
    trials_per_gpu: Annotated[int, Field(ge=1)] = 1
    n_jobs: Literal["auto"] | int = "auto"
    grace_s: Annotated[float, Field(ge=0)] = 30.0
    backend: Literal["loky", "dask"] = "loky"
    scheduler: str | None = None  # dask: "local" or "tcp://host:8786"

    @model_validator(mode="after")
    def _dask_needs_a_scheduler(self) -> ResourcesSpec:
        if self.backend == "dask" and not self.scheduler:
            raise ValueError(
                "resources.scheduler: is required with backend: dask ('local' to start a "
                "local Dask cluster, or the scheduler's address like 'tcp://host:8786')"
            )
        if self.backend == "loky" and self.scheduler:
            raise ValueError("resources.scheduler: only applies to backend: dask")
        if self.scheduler and self.scheduler != "local" and "://" not in self.scheduler:
            raise ValueError(
                f"resources.scheduler: must be 'local' or an address like 'tcp://host:8786', "
                f"got {self.scheduler!r}"
            )
        return self

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpus(cls, v: Any) -> Any:
        if v in ("auto", "none"):
            return v
        if v is None or v is False:
            return "none"
        if _gpu_id(v):
            return (v,)
        if isinstance(v, list) and v and all(_gpu_id(g) for g in v):
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
    # How many of the best completed trials keep their best epoch's model (best.keras);
    # the orchestrator deletes the others' as trials finish. 0 keeps none.
    keep_models: Annotated[int, Field(ge=0)] = 3

    @field_validator("keep_models", mode="before")
    @classmethod
    def _keep_models(cls, v: Any) -> Any:
        # `true` or "3" are not counts (pydantic would read them as 1 and 3)
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(
                f"must be an integer >= 0 (how many of the best trials keep their model), got {v!r}"
            )
        return v


class LoggingSpec(_Frozen):
    histograms: bool = False


def _builtin_space_problems(space: dict[str, Any]) -> list[str]:
    """The built-in task reads only BUILTIN_PARAMS, each a number within its rule."""
    problems: list[str] = []
    for key, p in space.items():
        if key not in BUILTIN_PARAMS:
            hint = did_you_mean(key, BUILTIN_PARAMS)
            problems.append(
                f"search_space: unknown key {key!r} for the built-in task"
                + (hint or f"; it reads {', '.join(BUILTIN_PARAMS)} (or set task.train)")
            )
            continue
        integer, op, bound = BUILTIN_PARAMS[key]
        kind = "integers" if integer else "numbers"
        if isinstance(p, IntParam) and p.high == "max" and key != "finetune_depth":
            problems.append(
                f"search_space.{key}.high: 'max' (all the base model's layers) only applies "
                "to finetune_depth, got 'max'"
            )
            continue
        if isinstance(p, CategoricalParam):
            values = [("choices", c) for c in p.choices]
        elif integer and isinstance(p, FloatParam):
            problems.append(
                f"search_space.{key}.type: must be 'int' or 'categorical' for the built-in "
                f"task ({key} takes {kind}), got 'float'"
            )
            continue
        else:
            values = [("low", p.low)]
        for name, v in values:
            if (
                not isinstance(v, (int, float))
                or isinstance(v, bool)
                or (integer and not isinstance(v, int))
            ):
                problems.append(
                    f"search_space.{key}.{name}: must be {kind} for the built-in task, got {v!r}"
                )
            elif not (v > bound if op == ">" else v >= bound):
                what = "choice" if name == "choices" else name
                problems.append(
                    f"search_space.{key}.{name}: `{what} {op} {bound}` must hold for the "
                    f"built-in task, got {what}={v!r}"
                )
    return problems


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
        problems += self._objective_problems()
        if (
            self.task.train is None
            and not self.study.objectives
            and self.study.metric not in BUILTIN_METRICS
        ):
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
        problems += self._test_top_k_problems()
        problems += entries_problems(self.study.enqueue, self.search_space, self.study.sampler.name)
        if self.task.train is None:
            problems += _builtin_space_problems(self.search_space)
        else:
            problems += [
                f"search_space.{key}.high: 'max' (all the base model's layers) needs the "
                "built-in task, got task.train: give a number"
                for key, p in self.search_space.items()
                if isinstance(p, IntParam) and p.high == "max"
            ]
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _objective_problems(self) -> list[str]:
        """Objectives and constraints: names the trial records (or costs), a sampler and
        no pruner that Optuna's multi-objective studies support."""
        study, builtin = self.study, self.task.train is None
        known = (*BUILTIN_METRICS, *COST_METRICS)
        problems: list[str] = []
        for i, goal in enumerate(study.objectives):
            if i == 0 and goal.name in COST_METRICS:
                problems.append(
                    f"study.metric[0].name: the first objective must be a metric the trial "
                    f"records (it picks each trial's best epoch), got {goal.name!r}: list it "
                    "after one"
                )
            elif builtin and goal.name not in known:
                problems.append(
                    f"{msg.yaml_path('study', 'metric', i, 'name')}: must be one of "
                    f"{', '.join(map(repr, known))} for the built-in task, got {goal.name!r}"
                    f"{did_you_mean(goal.name, known)}"
                )
        n = len(study.goals)
        if n > 1 and study.sampler.name == "cmaes":
            problems.append(
                f"study.sampler.name: 'cmaes' optimises one objective, got {n} objectives in "
                "study.metric: use 'tpe', 'random', 'grid' or 'qmc'"
            )
        if n > 1 and study.pruner.name != "none":
            problems.append(
                f"study.pruner.name: Optuna prunes single-objective studies only, got "
                f"{study.pruner.name!r} with {n} objectives in study.metric: drop study.pruner "
                "(or set name: none)"
            )
        for key in study.constraints:
            if builtin and key not in known:
                hint = did_you_mean(key, known)
                problems.append(
                    f"study.constraints: unknown key {key!r} for the built-in task"
                    + (hint or f"; allowed: {', '.join(known)}")
                )
        return problems

    def _test_top_k_problems(self) -> list[str]:
        k = self.study.test_top_k
        if not k:
            return []
        task = self.task
        if task.train is not None:
            why = f"task.train {task.train} trains and evaluates its own models"
        elif task.has_test_split is False:
            why = f"dataset {_label(task.dataset)} has none"
            if isinstance(task.dataset, ImageFolderDataset):
                why += ": give task.test_split"
        else:
            return []
        return [
            f"study.test_top_k: needs a test split of the built-in task, and {why} "
            f"(or set test_top_k: 0), got test_top_k={k}"
        ]

    @property
    def test_top_k(self) -> int:
        """How many of the best trials are evaluated on the test split at the end."""
        if self.study.test_top_k is not None:
            return self.study.test_top_k
        if self.task.train is not None or self.task.has_test_split is False:
            return 0
        return 1

    @property
    def output_dir(self) -> Path:
        return self.output.dir if self.output.dir is not None else Path("results") / self.study.name
