"""TensorFlow's start-up lines are filtered from a worker's stderr, nothing else is.

A stand-in `tensorflow` package writes what the real one writes at import, from C (fd 2),
so the filter is tested in a second without importing TensorFlow; the end-to-end digits
sweep (tests/e2e/test_digits_sweep.py) checks the real import.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796143537.059581   12112 port.cc:153] oneDNN custom operations are on. "
    "You may see slightly different numerical results due to floating-point round-off errors "
    "from different computation orders. To turn them off, set the environment variable "
    "`TF_ENABLE_ONEDNN_OPTS=0`.",
    "I0000 00:00:1796143537.060560   12112 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.",
    "I0000 00:00:1796143430.572641    7521 cpu_feature_guard.cc:227] This TensorFlow binary is "
    "optimized to use available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild "
    "TensorFlow with the appropriate compiler flags.",
]
REAL = "E0000 00:00:1796143537.1 12112 cuda_dnn.cc:8] Unable to register cuDNN factory"


def _fake_tensorflow(root: Path, fail: bool) -> None:
    pkg = root / "tensorflow"
    pkg.mkdir()
    lines = "".join(f"{line}\n" for line in [*NOISE[:3], REAL, *NOISE[3:]])
    body = f"import os\nos.write(2, {lines.encode()!r})\n"
    if fail:
        body += "raise ImportError('libcudart.so.12: cannot open shared object file')\n"
    (pkg / "__init__.py").write_text(body)


def _import(root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    code = (
        "from tbxsweep.worker._quiet import import_tensorflow\n"
        "import_tensorflow()\n"
        "import sys; print('after', file=sys.stderr)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(root), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("logs", ["", "0"])
def test_start_up_lines_are_dropped_and_other_lines_kept(tmp_path, logs) -> None:
    _fake_tensorflow(tmp_path, fail=False)
    proc = _import(tmp_path, TBXSWEEP_TF_LOGS=logs)
    assert proc.returncode == 0, proc.stderr
    # fd 2 is back where it was: later lines (a trial's errors) still reach the user.
    assert proc.stderr.splitlines() == [REAL, "after"]


def test_tbxsweep_tf_logs_shows_them(tmp_path) -> None:
    _fake_tensorflow(tmp_path, fail=False)
    proc = _import(tmp_path, TBXSWEEP_TF_LOGS="1")
    assert proc.stderr.splitlines() == [*NOISE[:3], REAL, *NOISE[3:], "after"]


def test_a_failed_import_shows_everything(tmp_path) -> None:
    _fake_tensorflow(tmp_path, fail=True)
    proc = _import(tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert lines[:5] == [*NOISE[:3], REAL, *NOISE[3:4]]
    assert lines[-1] == "ImportError: libcudart.so.12: cannot open shared object file"


_ENTRY = """
import sys
from tbxsweep.jobs import PrepareJob, SlotPlan
from tbxsweep.spec import load_spec
from tbxsweep.worker import describe
spec = load_spec({spec!r}, {overrides!r})
describe(PrepareJob(spec, "", SlotPlan("", ("",), 1)))  # static for these tasks
print("tensorflow" in sys.modules)
"""


@pytest.mark.parametrize(("overrides", "imported"), [([], "True"), (["task.train=x:y"], "False")])
def test_a_worker_imports_tensorflow_for_the_builtin_task_only(tmp_path, overrides, imported):
    """A training function of the user's may not use TensorFlow: its workers must not pay
    seconds for its import (the stand-in package keeps this test fast)."""
    from conftest import REPO

    _fake_tensorflow(tmp_path, fail=False)
    code = _ENTRY.format(spec=str(REPO / "sweeps" / "lr.yaml"), overrides=overrides)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stdout.strip() == imported, proc.stderr


def test_a_gpu_worker_without_a_usable_gpu_says_so(monkeypatch, capsys) -> None:
    """TensorFlow's "Could not find cuda drivers" is filtered: one line of ours replaces it
    where it matters, on a worker given a GPU that TensorFlow cannot use."""
    from tbxsweep.trial import _tf

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-8932f937")
    _tf._warn_without_gpu([])
    _tf._warn_without_gpu(["a GPU"])
    for hidden in ("", "-1"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        _tf._warn_without_gpu([])
    assert capsys.readouterr().err.splitlines() == [
        f"tbxsweep: worker {os.getpid()} was given GPU GPU-8932f937 but TensorFlow finds no "
        "GPU: its trials run on the CPU (a GPU needs pip install 'tensorflow[and-cuda]'; "
        "TBXSWEEP_TF_LOGS=1 shows TensorFlow's own start-up messages)"
    ]


def test_a_training_module_importing_tensorflow_is_filtered_alike(tmp_path) -> None:
    """A `task.train` module imported in the warm-up may import TensorFlow itself."""
    _fake_tensorflow(tmp_path, fail=False)
    (tmp_path / "my_train.py").write_text("import tensorflow\ndef train(p, c): ...\n")
    code = (
        "from tbxsweep.worker._quiet import quiet_startup\n"
        "with quiet_startup():\n"
        "    import my_train\n"
        "import sys; print('after', file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [REAL, "after"]
