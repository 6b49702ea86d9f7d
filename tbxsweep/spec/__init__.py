"""The sweep spec: loaded once from YAML, validated at the edge, frozen afterwards."""

from __future__ import annotations

from tbxsweep.spec import _messages as messages
from tbxsweep.spec._enqueue import enqueue_params
from tbxsweep.spec._load import load_spec, validate_spec
from tbxsweep.spec._model import (
    APPLICATION_NAMES,
    COST_METRICS,
    DATASET_CLASSES,
    DATASET_NAMES,
    DIGITS_FINETUNE_CLASSES,
    DIGITS_TEST_SPLIT,
    PRETRAIN_INPUT_SHAPE,
    Bound,
    BuilderModel,
    CategoricalParam,
    FloatParam,
    ImageFolderDataset,
    IntParam,
    LoaderDataset,
    LoggingSpec,
    NpzDataset,
    Objective,
    OutputSpec,
    PrunerSpec,
    ResourcesSpec,
    SamplerSpec,
    Spec,
    StudySpec,
    TaskSpec,
)
from tbxsweep.spec._resolve import resolve_space, swept_depths

__all__ = [
    "APPLICATION_NAMES",
    "COST_METRICS",
    "DATASET_CLASSES",
    "DATASET_NAMES",
    "DIGITS_FINETUNE_CLASSES",
    "DIGITS_TEST_SPLIT",
    "PRETRAIN_INPUT_SHAPE",
    "Bound",
    "BuilderModel",
    "CategoricalParam",
    "FloatParam",
    "ImageFolderDataset",
    "IntParam",
    "LoaderDataset",
    "LoggingSpec",
    "NpzDataset",
    "Objective",
    "OutputSpec",
    "PrunerSpec",
    "ResourcesSpec",
    "SamplerSpec",
    "Spec",
    "StudySpec",
    "TaskSpec",
    "enqueue_params",
    "load_spec",
    "messages",
    "resolve_space",
    "swept_depths",
    "validate_spec",
]
