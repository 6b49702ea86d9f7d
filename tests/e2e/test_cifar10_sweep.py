"""The classic CIFAR-10 experiment end to end: sweeps/cifar10.yaml through the CLI on a tiny
CIFAR-10 written in the Keras cache's own format, then read back through TensorBoard's HTTP
API (the `pretrain` run, the graph, the images, the HParams rows with the held-out test
columns), and a record of every CIFAR file each worker opened: no trial reads the test batch.
"""

from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tbxsweep.cli.board import start_board

pytestmark = pytest.mark.slow

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer")
CLASS_NAMES += ("dog", "frog", "horse", "ship", "truck")

# Installed as sitecustomize.py on the workers' PYTHONPATH: every open() of a CIFAR batch
# file is logged with the tbxsweep step that asked for it (found on the call stack).
OPEN_RECORDER = """
import builtins, io, os, sys

_log = os.environ.get("CIFAR_OPEN_LOG")
_open = builtins.open
_STEPS = ("evaluate_held_out", "run_trial", "prepare_base_model", "warm_up_worker",
          "describe_task")


def _step():
    names, f = set(), sys._getframe(2)
    while f is not None:
        names.add(f.f_code.co_name)
        f = f.f_back
    return next((s for s in _STEPS if s in names), "other")


def _recording_open(file, *args, **kwargs):
    if isinstance(file, (str, os.PathLike)) and "cifar-10-batches-py" in os.fspath(file):
        with _open(_log, "a") as fh:
            fh.write(f"{_step()} {os.path.basename(os.fspath(file))}\\n")
    return _open(file, *args, **kwargs)


if _log:
    builtins.open = io.open = _recording_open
"""


def write_tiny_cifar10(home: Path, per_class: int = 60, n_test: int = 10) -> None:
    """CIFAR-10 as Keras keeps it extracted (`datasets/cifar-10-batches-py/`): pickled dicts
    of uint8 rows (R, G, B planes of 32x32) in data_batch_1..5 and test_batch. Each class
    is a colour and a stripe pattern with noise: learnable in an epoch or two."""
    rng = np.random.default_rng(0)
    folder = home / "datasets" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    colors = rng.integers(30, 226, size=(10, 3))
    yy, xx = np.mgrid[0:32, 0:32]

    def rows(labels: np.ndarray) -> np.ndarray:
        x = rng.normal(0, 20, size=(len(labels), 32, 32, 3))
        for i, k in enumerate(labels):
            stripes = ((xx * (k % 3 + 1) + yy * (k // 3)) // 4) % 2
            x[i] += colors[k] + 40 * stripes[..., None]
        x = np.clip(x, 0, 255).astype(np.uint8)
        return x.transpose(0, 3, 1, 2).reshape(len(labels), 3072)

    def dump(name: str, labels: np.ndarray) -> None:
        batch = {b"data": rows(labels), b"labels": labels.tolist()}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))

    train = np.repeat(np.arange(10), per_class - n_test)
    rng.shuffle(train)
    for b, part in enumerate(np.array_split(train, 5), start=1):
        dump(f"data_batch_{b}", part)
    dump("test_batch", np.repeat(np.arange(10), n_test))
    meta = {b"label_names": [n.encode() for n in CLASS_NAMES]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Any]:
    from conftest import REPO, cli_env

    tmp = tmp_path_factory.mktemp("cifar10")
    write_tiny_cifar10(tmp / "keras")
    (tmp / "site").mkdir()
    (tmp / "site" / "sitecustomize.py").write_text(OPEN_RECORDER)
    env = cli_env()
    env["KERAS_HOME"] = str(tmp / "keras")
    env["CIFAR_OPEN_LOG"] = str(tmp / "opened.log")
    env["PYTHONPATH"] = f"{tmp / 'site'}:{env['PYTHONPATH']}"
    out = tmp / "out"
    sets = {
        "study.n_trials": 2,
        "study.test_top_k": 1,
        "study.pruner.name": "none",
        "task.epochs": 2,
        "task.pretrain_epochs": 1,
        "task.subset": 200,
        "resources.n_jobs": 2,
        "output.dir": out,
    }
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    proc = subprocess.run(
        [sys.executable, "-m", "tbxsweep", "start", str(REPO / "sweeps" / "cifar10.yaml"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return out, tmp / "opened.log", proc


def _get(board: Any, route: str) -> Any:
    with urllib.request.urlopen(f"{board.url}{route}", timeout=30) as resp:
        body = resp.read()
    return json.loads(body) if route.startswith("/data/plugin/") and "graph?" not in route else body


def test_pretrained_once_on_classes_0_to_4_then_fine_tuned_on_5_to_9(sweep) -> None:
    out, _, proc = sweep
    lines = proc.stdout.splitlines()
    assert lines[0] == "tbxsweep: study 'cifar10', 2 trials, maximize val_accuracy"
    assert lines[2] == "feature cache: off (not for base_model 'pretrain')"
    assert lines[3].startswith("pretraining the base model once (cached at ")
    assert len(list((out / "cache").glob("base-*.keras"))) == 1
    assert "done: 2/2 finished (2 complete, 0 pruned), 0 failed" in lines


def test_only_the_best_trial_is_evaluated_on_the_test_split(sweep) -> None:
    out, _, _ = sweep
    df = pd.read_csv(out / "leaderboard.csv")
    assert list(df.columns)[:6] == ["rank", "trial", "state", "value", "test_accuracy", "test_loss"]
    best, other = df.iloc[0], df.iloc[1]
    assert 0.0 <= best["test_accuracy"] <= 1.0 and best["test_loss"] > 0
    assert math.isnan(other["test_accuracy"]) and math.isnan(other["test_loss"])
    # 10 test images of each of the 5 fine-tuning classes: accuracy is a multiple of 1/50
    assert best["test_accuracy"] * 50 == pytest.approx(round(best["test_accuracy"] * 50), abs=1e-4)
    assert (out / f"trial-{best['trial']:04d}" / "best.weights.h5").is_file()


def test_no_trial_ever_opens_the_test_batch(sweep) -> None:
    _, opened, _ = sweep
    records = [line.split() for line in opened.read_text().splitlines()]
    reads = {(step, name) for step, name in records}
    assert ("evaluate_held_out", "test_batch") in reads  # the recorder does see it
    assert {step for step, name in reads if name == "test_batch"} == {"evaluate_held_out"}
    # the training batches: read once per worker, by whichever step came first there
    steps = {"run_trial", "warm_up_worker", "prepare_base_model"}
    assert {step for step, name in reads if name == "data_batch_1"} <= steps
    assert any(name == "data_batch_1" for _, name in reads)


def test_tensorboard_shows_the_pretrain_run_the_graphs_the_images_and_the_test_columns(
    sweep,
) -> None:
    out, _, _ = sweep
    df = pd.read_csv(out / "leaderboard.csv")
    with start_board(out) as board:
        deadline = time.monotonic() + 30
        while "pretrain" not in _get(board, "/data/plugin/scalars/tags"):
            assert time.monotonic() < deadline
            time.sleep(1)
        scalars = _get(board, "/data/plugin/scalars/tags")
        graphs = _get(board, "/data/plugin/graphs/info")
        graph = _get(board, "/data/plugin/graphs/graph?run=trial-0000&conceptual=false")
        images = _get(board, "/data/plugin/images/tags")
        texts = _get(board, "/data/plugin/text/tags")
        exp = board.experiment()
        groups = board.session_groups()
    assert set(scalars["pretrain"]) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert {"pretrain", "trial-0000", "trial-0001"} <= {
        run for run, info in graphs.items() if info["run_graph"]
    }
    assert b'name: "image"' in graph and b"Conv2D" in graph
    depth = int(df[df["trial"] == 0]["finetune_depth"].iloc[0])
    scopes = {b"trainable/head"} | ({b"frozen/conv1"} if depth < 3 else {b"trainable/conv1"})
    assert all(s in graph for s in scopes), depth
    assert list(images["sweep"]) == ["data/fine_tune_samples"]
    assert list(images["pretrain"]) == ["data/pretrain_samples"]
    for run in ("trial-0000", "trial-0001"):
        assert {"eval/confusion_matrix", "eval/misclassified"} <= set(images[run])
        assert "model/summary/text_summary" in texts[run]
    tags = [m["name"]["tag"] for m in exp["metricInfos"]]
    assert tags[tags.index("trainable_params") + 1 :][:2] == ["test/accuracy", "test/loss"]
    assert sorted(g["name"] for g in groups) == ["trial-0000", "trial-0001"]
    for g in groups:
        row = df[df["run"] == g["name"]].iloc[0]
        assert g["hparams"] == {
            "learning_rate": pytest.approx(row["learning_rate"]),
            "batch_size": str(row["batch_size"]),
            "finetune_depth": str(row["finetune_depth"]),
        }
        metrics = {m["name"]["tag"]: m["value"] for m in g["metricValues"]}
        assert metrics["best/val_accuracy"] == pytest.approx(row["value"], rel=1e-6)
        if row["rank"] == 1:
            assert metrics["test/accuracy"] == pytest.approx(row["test_accuracy"], rel=1e-6)
            assert metrics["test/loss"] == pytest.approx(row["test_loss"], rel=1e-6)
        else:
            assert "test/accuracy" not in metrics and "test/loss" not in metrics


BAD_TASKS = [
    (
        {"task.pretrain.classes": "[4, 5, 6]"},
        "task.pretrain.classes: must not overlap task.classes on the same dataset (the base "
        "would have seen the classes it is fine-tuned on), got 5, 6 in both",
    ),
    (
        {"task.classes": "[5, 6, 7, 8, 10]"},
        "task.classes: `class < 10` must hold (cifar10 has 10 classes, 0..9), got class=10",
    ),
    (
        {
            "task.dataset": "{images: /data/pets, image_size: [64, 64]}",
            "task.classes": "null",
            "task.pretrain.classes": "null",
            "task.pretrain.dataset": "cifar10",
        },
        "study.test_top_k: needs a test split of the built-in task, and dataset "
        "{images: /data/pets} has none: give task.test_split "
        "(or set test_top_k: 0), got test_top_k=3",
    ),
    (
        {"task.test_split": "0.2"},
        "task.test_split: cifar10 has a test split of its own (never read by a trial), "
        "got test_split=0.2: drop task.test_split",
    ),
    (
        {"task.val_split": "1.0"},
        "task.val_split: `0 < val_split < 1` must hold, got val_split=1.0",
    ),
    (
        {"task.val_split": "0"},
        "task.val_split: `0 < val_split < 1` must hold, got val_split=0.0",
    ),
]


@pytest.mark.parametrize(
    ("sets", "message"), BAD_TASKS, ids=[m.split(":")[0] for _, m in BAD_TASKS]
)
def test_bad_source_and_target_tasks_get_one_line_and_exit_2(run_cli, tmp_path, sets, message):
    from conftest import REPO

    spec = REPO / "sweeps" / "cifar10.yaml"
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    res = run_cli("start", str(spec), *args, "--set", f"output.dir={tmp_path / 'out'}")
    assert (res.returncode, res.stderr) == (2, f"error: {spec}: {message}\n")
    assert not (tmp_path / "out").exists()
