"""GPU discovery and worker slots, without initialising CUDA (and without a GPU here)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tbxsweep.schedule import detect_gpus, plan_devices
from tbxsweep.spec import ResourcesSpec


@pytest.fixture
def fake_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An `nvidia-smi` on PATH that reports two GPUs."""
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text("#!/bin/sh\nprintf '0\\n1\\n'\n")
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{smi.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return smi


def test_auto_asks_nvidia_smi_when_cuda_visible_devices_is_unset(fake_smi) -> None:
    assert detect_gpus() == (0, 1)


@pytest.mark.parametrize(
    ("value", "gpus"),
    [("2,3", (2, 3)), ("", ()), ("-1", ()), ("GPU-1a2b,GPU-3c4d", (0, 1))],
)
def test_cuda_visible_devices_wins(fake_smi, monkeypatch, value, gpus) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    assert detect_gpus() == gpus


def test_no_driver_means_no_gpu(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert detect_gpus() == ()


def test_slots_are_gpus_times_trials_per_gpu(fake_smi) -> None:
    plan = plan_devices(ResourcesSpec(gpus="auto", trials_per_gpu=3), n_trials=16)
    assert plan.gpus == (0, 1)
    assert plan.devices == ("0", "0", "0", "1", "1", "1")
    assert plan.warning is None


def test_an_explicit_list_is_honoured_and_missing_gpus_are_warned_about(fake_smi) -> None:
    plan = plan_devices(ResourcesSpec(gpus=[1, 5], trials_per_gpu=2), n_trials=16)
    assert plan.devices == ("1", "1", "5", "5")
    assert plan.warning == (
        "resources.gpus lists [1, 5] but GPU(s) [5] are not visible on this machine: those "
        "slots keep their GPU id but their trials will run on the CPU"
    )


def test_cpu_workers_share_the_cores_without_oversubscribing(monkeypatch) -> None:
    monkeypatch.setattr("tbxsweep.schedule._slots.cpu_count", lambda: 8)
    plan = plan_devices(ResourcesSpec(gpus="none", n_jobs="auto"), n_trials=100)
    assert plan.devices == ("",) * 4 and plan.threads_per_worker == 2
    plan = plan_devices(ResourcesSpec(gpus="none", n_jobs="auto"), n_trials=3)
    assert len(plan.devices) == 3  # never more workers than trials
    plan = plan_devices(ResourcesSpec(gpus="none", n_jobs=8), n_trials=100)
    assert plan.threads_per_worker == 1
