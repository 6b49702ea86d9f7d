"""Spec errors come from one place (tbxsweep.spec.messages), in one shape: a rule checked on
the spec and again where the data or the model is loaded reads the same in both places, and
list items are written `[i]` in every YAML path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tbxsweep.errors import SpecError
from tbxsweep.spec import load_spec
from tbxsweep.spec import messages as msg
from tbxsweep.trial.backbones import load_backbone
from tbxsweep.trial.datasets import load_keras_dataset


def _errors(path: Path) -> list[str]:
    with pytest.raises(SpecError) as exc:
        load_spec(path)
    return exc.value.problems


def test_yaml_paths_write_list_items_in_brackets() -> None:
    assert msg.yaml_path("study", "metric", 0, "name") == "study.metric[0].name"
    assert msg.yaml_path("study", "enqueue", 1, "learning_rate") == "study.enqueue[1].learning_rate"
    assert msg.yaml_path("search_space", "batch_size", "choices", 2) == (
        "search_space.batch_size.choices[2]"
    )
    assert msg.yaml_path("task") == "task"


def test_a_list_item_that_pydantic_refuses_is_written_in_brackets(make_spec: Any) -> None:
    path = make_spec(search_space={"batch_size": {"type": "categorical", "choices": [16, [1]]}})
    at = f"{path}: search_space.batch_size.choices[1]"
    # One line per scalar type a choice may have, none naming pydantic's union branches.
    assert _errors(path) == [
        f"{at}: must be true or false, got a list [1]",
        f"{at}: must be an integer, got a list [1]",
        f"{at}: must be a number, got a list [1]",
        f"{at}: must be a string, got a list [1]",
    ]


def test_a_multi_objective_item_is_written_in_brackets(make_spec: Any) -> None:
    path = make_spec(study={"metric": [{"name": "score", "direction": "up"}]})
    assert _errors(path) == [
        f"{path}: study.metric[0].direction: must be one of 'maximize', 'minimize', got 'up'"
    ]


def test_weights_read_the_same_in_the_spec_and_where_the_backbone_is_built(
    make_spec: Any,
) -> None:
    path = make_spec(base="digits", task={"base_model": "mobilenet_v2", "weights": "imagenat"})
    expected = "task.weights: must be 'imagenet' or null, got 'imagenat' (did you mean 'imagenet'?)"
    assert _errors(path) == [f"{path}: {expected}"]
    with pytest.raises(SpecError) as exc:  # refused before Keras is imported
        load_backbone("mobilenet_v2", input_shape=(32, 32, 3), weights="imagenat")
    assert exc.value.problems == [expected]


def test_a_split_fraction_reads_the_same_in_the_spec_and_where_the_data_is_loaded(
    make_spec: Any,
) -> None:
    path = make_spec(base="digits", task={"dataset": "mnist", "val_split": 1.5})
    expected = "task.val_split: `0 < val_split < 1` must hold, got val_split=1.5"
    assert _errors(path) == [f"{path}: {expected}"]
    with pytest.raises(SpecError) as exc:  # refused before the cache is looked at
        load_keras_dataset("mnist", val_split=1.5)
    assert exc.value.problems == [expected]


def test_a_subset_reads_the_same_in_the_spec_and_where_the_data_is_loaded(
    make_spec: Any,
) -> None:
    path = make_spec(base="digits", task={"dataset": "mnist", "subset": 0})
    expected = "task.subset: `subset >= 1` must hold, got subset=0"
    assert _errors(path) == [f"{path}: {expected}"]
    with pytest.raises(SpecError) as exc:
        load_keras_dataset("mnist", subset=0)
    assert exc.value.problems == [expected]
