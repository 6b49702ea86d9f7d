"""The built-in task end to end on data the tests write: an .npz file and an image folder,
fine-tuning a small MobileNetV2 (random weights, nothing downloaded)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tbxsweep.errors import SpecError
from tbxsweep.schedule import run_sweep
from tbxsweep.spec import load_spec

pytestmark = pytest.mark.slow

APPS = "https://storage.googleapis.com/tensorflow/keras-applications/"


def _spec(make_spec: Any, task: dict[str, Any], depth: dict[str, Any], n_jobs: int = 1) -> Path:
    """Two quick trials of the built-in task on CPU (the rest from sweeps/lr.yaml)."""
    return make_spec(
        base="digits",
        study={"n_trials": 2, "sampler": {"name": "random", "seed": 1}, "pruner": {"name": "none"}},
        search_space={
            "learning_rate": {"low": 1.0e-3, "high": 2.0e-3},
            "batch_size": {"choices": [16]},
            "finetune_depth": depth,
        },
        task=task,
        resources={"gpus": "none", "n_jobs": n_jobs},
    )


def _npz(tmp_path: Path) -> Path:
    """48 random 32x32 RGB images in 3 classes, 36 to train and 12 to validate."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8)
    y = np.arange(48) % 3
    path = tmp_path / "data.npz"
    np.savez(path, x_train=x[:36], y_train=y[:36], x_val=x[36:], y_val=y[36:])
    return path


def _photos(root: Path) -> Path:
    """Two classes of 8 small PNGs each, 20x24 pixels, coloured by class."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, channel in (("cat", 0), ("dog", 2)):
        (root / name).mkdir(parents=True)
        for i in range(8):
            img = rng.integers(0, 80, (20, 24, 3), dtype=np.uint8)
            img[..., channel] += 150
            Image.fromarray(img).save(root / name / f"{i}.png")
    return root


def _run(path: Path) -> tuple[Any, list[tuple[str, dict[str, Any]]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    counts = run_sweep(
        load_spec(path), on_event=lambda kind, info: events.append((kind, info)), where=str(path)
    )
    return counts, events


def _tags(run_dir: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return set(acc.Tags()["scalars"])


def test_npz_dataset_with_mobilenet_blocks_and_a_head_phase(make_spec, tmp_path) -> None:
    npz = _npz(tmp_path)
    task = {
        "dataset": {"npz": str(npz)},
        "base_model": "mobilenet_v2",
        "finetune_unit": "block",
        "head_epochs": 1,
        "epochs": 1,
    }
    path = _spec(make_spec, task, {"low": 1, "high": 2})
    counts, events = _run(path)

    assert (counts.finished, counts.complete) == (2, 2)
    info = next(i for kind, i in events if kind == "plan")["task"]
    assert (info.depth_max, info.base_cache_key) == (19, None)
    assert info.description == (
        f"{npz} (3 classes, 36 train / 12 val images of 32x32x3); "
        "base mobilenet_v2 (weights random), input 32x32x3 (19 blocks)"
    )
    out = tmp_path / "out"
    df = pd.read_csv(out / "leaderboard.csv").sort_values("finetune_depth")
    assert df["state"].tolist() == ["complete", "complete"]
    assert df["finetune_depth"].tolist() == [1, 2]  # the sampler's seed picks both
    # depth 1: the top unit (Conv_1, 320x1280) + the head (1280x3 + 3);
    # depth 2: + block_16 (expand 160x960, depthwise 3x3x960, project 960x320)
    assert df["trainable_params"].tolist() == [413443, 882883]
    assert not (out / "cache").exists()  # nothing to pretrain
    tags = _tags(out / df["run"].iloc[0])
    assert {"head/loss", "head/val_accuracy", "val_accuracy", "trainable_params"} <= tags
    assert {"class/0/recall", "class/2/precision"} <= tags


def test_image_folder_resized_to_the_input_shape_with_two_workers(make_spec, tmp_path) -> None:
    photos = _photos(tmp_path / "photos")
    task = {
        "dataset": {"images": str(photos), "image_size": [20, 24], "val_split": 0.25},
        "base_model": "mobilenet_v2",
        "input_shape": [32, 32, 3],
        "epochs": 1,
    }
    path = _spec(make_spec, task, {"low": 0, "high": 2}, n_jobs=2)
    counts, events = _run(path)

    assert (counts.finished, counts.complete) == (2, 2)
    info = next(i for kind, i in events if kind == "plan")["task"]
    assert info.description == (
        f"{photos} (2 classes, 12 train / 4 val images of 20x24x3); "
        "base mobilenet_v2 (weights random), input 32x32x3 (52 weighted layers)"
    )
    df = pd.read_csv(tmp_path / "out" / "leaderboard.csv")
    # head 1280x2 + 2; Conv_1 320x1280; block_16_project 960x320 (unit: layer)
    expected = {0: 2562, 1: 2562 + 409600, 2: 2562 + 409600 + 307200}
    for _, row in df.iterrows():
        assert row["state"] == "complete"
        assert row["trainable_params"] == expected[row["finetune_depth"]]
    tags = _tags(tmp_path / "out" / df["run"].iloc[0])
    assert {"class/cat/precision", "class/dog/recall"} <= tags  # the folders' names


def test_finetune_depth_beyond_the_backbone_is_refused_before_anything_is_written(
    make_spec, tmp_path
) -> None:
    task = {
        "dataset": {"npz": str(_npz(tmp_path))},
        "base_model": "mobilenet_v2",
        "finetune_unit": "block",
    }
    path = _spec(make_spec, task, {"low": 0, "high": 25})
    with pytest.raises(SpecError) as err:
        _run(path)
    assert err.value.problems == [
        f"{path}: search_space.finetune_depth.high: `high <= 19` must hold "
        "(the base model has 19 blocks), got high=25"
    ]
    assert not (tmp_path / "out").exists()


def _task(tmp_path: Path, **task: Any) -> Any:
    from tbxsweep.spec import validate_spec

    raw = {
        "study": {"name": "t"},
        "search_space": {"learning_rate": {"type": "float", "low": 0.001, "high": 0.01}},
        "task": task,
    }
    return validate_spec(raw, "spec.yaml")


def test_describe_reports_missing_imagenet_weights_and_writes_nothing(
    tmp_path, monkeypatch
) -> None:
    from tbxsweep.trial import describe_task

    home = tmp_path / "keras_home"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    npz = _npz(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    spec = _task(tmp_path, dataset={"npz": str(npz)}, base_model="mobilenet_v2", weights="imagenet")
    with pytest.raises(SpecError) as err:
        describe_task(spec)
    name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    assert str(err.value) == (
        f"task.weights: imagenet weights for mobilenet_v2 are not in the Keras cache: "
        f"put {name} at {home / 'models' / name} "
        f"(download {APPS}mobilenet_v2/{name} on a machine with internet)"
    )
    spec = _task(tmp_path, dataset={"npz": str(npz)}, base_model="mobilenet_v2")
    assert describe_task(spec).depth_max == 52
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_digits_on_an_rgb_backbone_are_resized_and_get_three_channels(tmp_path) -> None:
    from tbxsweep.trial import describe_task
    from tbxsweep.trial._base import load_base
    from tbxsweep.trial._data import load_task_data
    from tbxsweep.trial._finetune import build_model, pipelines

    spec = _task(tmp_path, base_model="mobilenet_v2", input_shape=[32, 32, 3])
    info = describe_task(spec)
    assert info.description == (
        "digits 5-9 (5 classes, 645 train / 72 val images of 8x8x1); "
        "base mobilenet_v2 (weights random), input 32x32x3 (52 weighted layers)"
    )
    data = load_task_data(spec.task)
    base = load_base(spec.task, data)
    train, _ = pipelines(data, base, 16, seed=0)
    x, y = next(iter(train))
    assert tuple(x.shape) == (16, 32, 32, 3) and tuple(y.shape) == (16,)
    # MobileNetV2's preprocess_input maps [0, 1] pixels to [-1, 1]; the channels are copies
    x = np.asarray(x)
    assert x.min() >= -1.0 and x.max() <= 1.0 and x.max() > 0.0
    np.testing.assert_array_equal(x[..., 0], x[..., 2])
    model, _ = build_model(base, data)
    assert model.output_shape == (None, 5)


LOADER = """
import numpy as np


def arrays():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    y = np.arange(40) % 4
    return x[:30], y[:30], x[30:], y[30:]


def batches():
    import tensorflow as tf

    x, y, xv, yv = arrays()
    def ds(a, b):
        return tf.data.Dataset.from_tensor_slices((a / 255.0, b)).batch(8)
    return ds(x, y), ds(xv, yv)
"""


def test_custom_loader_arrays_and_tf_data(tmp_path, monkeypatch) -> None:
    from tbxsweep.trial import describe_task
    from tbxsweep.trial._base import load_base
    from tbxsweep.trial._data import load_task_data
    from tbxsweep.trial._finetune import pipelines

    (tmp_path / "tbx_test_loader.py").write_text(LOADER)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = _task(tmp_path, dataset={"loader": "tbx_test_loader:arrays"}, base_model="resnet50")
    assert describe_task(spec).description == (
        "tbx_test_loader:arrays (4 classes, 30 train / 10 val images of 32x32x3); "
        "base resnet50 (weights random), input 32x32x3 (53 weighted layers)"
    )
    spec = _task(tmp_path, dataset={"loader": "tbx_test_loader:batches"}, base_model="resnet50")
    info = describe_task(spec)
    assert info.description == (
        "tbx_test_loader:batches (4 classes, tf.data batches of 32x32x3 images); "
        "base resnet50 (weights random), input 32x32x3 (53 weighted layers)"
    )
    data = load_task_data(spec.task)
    assert pipelines(data, load_base(spec.task, data), 16, seed=0) == data.datasets
    bigger = _task(
        tmp_path,
        dataset={"loader": "tbx_test_loader:batches"},
        base_model="resnet50",
        input_shape=[64, 64, 3],
    )
    with pytest.raises(SpecError) as err:
        describe_task(bigger)
    assert str(err.value) == (
        "task.input_shape: the loader's tf.data batches hold 32x32x3 images and the base "
        "model takes 64x64x3: resize in the loader, or leave task.input_shape out"
    )
    subset = _task(
        tmp_path, dataset={"loader": "tbx_test_loader:batches"}, base_model="resnet50", subset=5
    )
    with pytest.raises(SpecError) as err:
        describe_task(subset)
    assert str(err.value) == (
        "task.subset: cannot be applied to the tf.data datasets tbx_test_loader:batches "
        "returns (take the subset in the loader, or return arrays)"
    )


def test_a_trial_on_a_keras_dataset_never_reads_its_test_split(tmp_path, monkeypatch) -> None:
    """Pruning, best epoch and ranking read validation data carved from the training split:
    a trial on CIFAR-10 opens only the training batches (the test batch here is not even a
    pickle) and validates on task.val_split of them."""
    import pickle
    import time

    from conftest import REPO

    from tbxsweep.jobs import SlotPlan, TrialJob
    from tbxsweep.trial import _data, datasets, run_trial

    folder = tmp_path / "keras" / "datasets" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for b in range(1, 6):
        batch = {b"data": rng.integers(0, 256, (10, 3072), np.uint8), b"labels": list(range(10))}
        (folder / f"data_batch_{b}").write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "test_batch").write_bytes(b"not a pickle: a trial that reads it fails")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    opened: list[str] = []
    read_batch = datasets._cifar_batch

    def recording(fh: Any, label_key: str) -> Any:
        opened.append(Path(fh.name).name)
        return read_batch(fh, label_key)

    monkeypatch.setattr(datasets, "_cifar_batch", recording)
    spec = load_spec(
        REPO / "sweeps" / "lr.yaml",
        [
            "task.dataset=cifar10",
            "task.val_split=0.2",
            "task.base_model={builder: 'fake_trials:regularized_base'}",
            "task.epochs=2",
            "study.pruner.name=none",
            f"output.dir={tmp_path / 'out'}",
        ],
    )
    run = tmp_path / "out" / "trial-0000"
    job = TrialJob(
        number=0,
        trial_id=0,
        params={"learning_rate": 0.01, "batch_size": 16, "finetune_depth": 1},
        seed=0,
        run_dir=str(run),
        run_name=run.name,
        group=run.name,
        spec=spec,
        storage_url=None,
        slots=SlotPlan("", ("",), 1),
        base_model_path=None,
        dispatched_at=time.time(),
    )
    try:
        outcome = run_trial(job, "cpu")
        data = _data.load_task_data(spec.task)
    finally:
        datasets.clear_cache()
        _data._cache.clear()
    assert outcome.state.name == "COMPLETE", outcome.error
    assert sorted(opened) == [f"data_batch_{b}" for b in range(1, 6)]
    assert data.label == "cifar10 (10 classes, 40 train / 10 val images of 32x32x3)"
    assert sorted(data.arrays.y_val.tolist()) == list(range(10))  # one per class


def test_has_test_data_lists_an_npz_without_reading_it(tmp_path) -> None:
    """Trials write best-epoch weights only where the sweep's last step finds a test split."""
    from tbxsweep.trial._data import has_test_data

    plain = _npz(tmp_path)
    with_test = tmp_path / "with_test.npz"
    arrays = dict(np.load(plain))
    np.savez(with_test, **arrays, x_test=arrays["x_val"], y_test=arrays["y_val"])
    cases = [
        ({"dataset": {"npz": str(plain)}}, False),
        ({"dataset": {"npz": str(with_test)}}, True),
        ({"dataset": {"npz": str(plain)}, "test_split": 0.2}, True),
        ({"dataset": {"npz": str(tmp_path / "missing.npz")}}, False),
        ({"dataset": "digits"}, True),
        ({"dataset": {"loader": "tbx_test_loader:arrays"}}, False),
    ]
    for task, expected in cases:
        assert has_test_data(_task(tmp_path, base_model="mobilenet_v2", **task).task) is expected
