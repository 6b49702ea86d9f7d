"""sweeps/custom.yaml and sweeps/cifar10.yaml run as documented (examples/ on PYTHONPATH)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"

pytestmark = pytest.mark.slow


def _quick(out: Path, n_trials: int, epochs: int) -> list[str]:
    return [
        "--set",
        f"study.n_trials={n_trials}",
        "--set",
        f"task.epochs={epochs}",
        "--set",
        "resources.gpus=none",
        "--set",
        "resources.n_jobs=1",
        "--set",
        f"output.dir={out}",
    ]


def test_custom_train_example_sweep(run_cli, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(EXAMPLES))
    out = tmp_path / "custom"
    res = run_cli("start", str(REPO / "sweeps" / "custom.yaml"), *_quick(out, 2, 2))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "done: 2/2 finished (2 complete, 0 pruned), 0 failed" in res.stdout.splitlines()
    df = pd.read_csv(out / "leaderboard.csv")
    assert list(df.columns[4:8]) == ["learning_rate", "units", "dropout", "batch_size"]
    assert df["state"].tolist() == ["complete", "complete"]
    assert df["epochs_run"].tolist() == [2, 2]
    # the MLP's weights: 64 x units + units, then units x 10 + 10
    assert df["trainable_params"].tolist() == [75 * u + 10 for u in df["units"]]
    assert ((df["value"] > 0.0) & (df["value"] <= 1.0)).all()  # macro F1


def test_custom_train_needs_its_package_on_the_path(run_cli, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("PYTHONPATH", raising=False)
    spec = REPO / "sweeps" / "custom.yaml"
    res = run_cli("start", str(spec), *_quick(tmp_path / "custom", 1, 1))
    assert res.returncode == 2
    assert res.stderr == (
        f"error: {spec}: task.train: cannot import module 'custom_train' (is it on PYTHONPATH?)\n"
    )


def _fake_cifar10(home: Path) -> None:
    """A tiny CIFAR-10 in the layout Keras 3 leaves in its cache (pickled batches)."""
    folder = home / "datasets" / "cifar-10-batches-py-target" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        data = rng.integers(0, 256, (8, 3072), dtype=np.uint8)
        labels = [(i + j) % 10 for j in range(8)]
        (folder / name).write_bytes(pickle.dumps({b"data": data, b"labels": labels}, protocol=2))


def test_cifar10_sweep_pretrains_the_small_cnn_builder(run_cli, tmp_path, monkeypatch) -> None:
    """examples/small_cnn.py as `task.pretrain.builder`: pretrained on classes 0-4, a new
    head fine-tuned on 5-9 (the classic CNN is the default; tests/e2e/test_cifar10_sweep.py)."""
    home = tmp_path / "keras_home"
    _fake_cifar10(home)
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setenv("PYTHONPATH", str(EXAMPLES))
    out = tmp_path / "cifar10"
    res = run_cli(
        "start",
        str(REPO / "sweeps" / "cifar10.yaml"),
        *_quick(out, 1, 1),
        "--set",
        "task.pretrain.builder=small_cnn:build",
        "--set",
        "task.pretrain_epochs=1",
        "--set",
        "search_space.finetune_depth.low=0",
        "--set",
        "search_space.finetune_depth.high=0",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "done: 1/1 finished (1 complete, 0 pruned), 0 failed" in res.stdout.splitlines()
    row = pd.read_csv(out / "leaderboard.csv").iloc[0]
    assert row["state"] == "complete" and row["epochs_run"] == 1
    assert row["trainable_params"] == 512 * 5 + 5  # depth 0: the new head only


def test_cifar10_sweep_says_where_the_archive_goes(run_cli, tmp_path, monkeypatch) -> None:
    home = tmp_path / "empty_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setenv("PYTHONPATH", str(EXAMPLES))
    out = tmp_path / "cifar10"
    res = run_cli("start", str(REPO / "sweeps" / "cifar10.yaml"), *_quick(out, 1, 1))
    assert res.returncode == 2, res.stderr[-3000:]
    archive = home / "datasets" / "cifar-10-batches-py-target_archive"
    assert res.stderr.splitlines()[-1].endswith(
        f"task.dataset: cifar10 is not in the Keras cache: put cifar-10-python.tar.gz at "
        f"{archive} (download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz on a "
        "machine with internet)"
    )
    assert not out.exists()
