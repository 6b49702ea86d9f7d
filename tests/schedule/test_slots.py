"""GPU discovery and worker slots, without initialising CUDA (and without a GPU here).

GPU ids travel as CUDA_VISIBLE_DEVICES writes them (an index, "GPU-<uuid>", "MIG-<uuid>"):
each worker's CUDA_VISIBLE_DEVICES gets its slot's id unchanged.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tbxsweep.errors import SpecError
from tbxsweep.schedule import detect_gpus, plan_devices
from tbxsweep.spec import ResourcesSpec, load_spec

UUIDS = ("GPU-8932f937-d72c-4106-c12f-20bd9faed9f6", "GPU-1c2d3e4f-0000-1111-2222-333344445555")


@pytest.fixture
def fake_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An `nvidia-smi` on PATH that reports two GPUs (index, UUID)."""
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text(f"#!/bin/sh\nprintf '0, {UUIDS[0]}\\n1, {UUIDS[1]}\\n'\n")
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{smi.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return smi


def test_auto_asks_nvidia_smi_when_cuda_visible_devices_is_unset(fake_smi) -> None:
    assert detect_gpus() == ("0", "1")


@pytest.mark.parametrize(
    ("value", "gpus"),
    [
        ("2,3", ("2", "3")),
        ("", ()),
        ("-1", ()),
        ("0,-1,1", ("0",)),  # CUDA stops at the first invalid id
        (",".join(UUIDS), UUIDS),
        ("MIG-4b1a6f8e-0d2c-5e7a-9f3b-1a2b3c4d5e6f", ("MIG-4b1a6f8e-0d2c-5e7a-9f3b-1a2b3c4d5e6f",)),
    ],
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
    assert plan.gpus == ("0", "1")
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


def test_uuids_in_cuda_visible_devices_become_the_slots_unchanged(fake_smi, monkeypatch) -> None:
    """A shared machine hands out GPUs by UUID: slot "0" would be another user's GPU."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"{UUIDS[1]},{UUIDS[0]}")
    plan = plan_devices(ResourcesSpec(gpus="auto", trials_per_gpu=2), n_trials=16)
    assert plan.gpus == (UUIDS[1], UUIDS[0])
    assert plan.devices == (UUIDS[1], UUIDS[1], UUIDS[0], UUIDS[0])
    assert plan.warning is None


def test_listed_uuids_and_mig_ids_pass_through(fake_smi) -> None:
    mig = "MIG-4b1a6f8e-0d2c-5e7a-9f3b-1a2b3c4d5e6f"
    plan = plan_devices(ResourcesSpec(gpus=[UUIDS[1], mig]), n_trials=4)
    assert plan.devices == (UUIDS[1], mig)
    assert plan.warning is None  # the UUID is nvidia-smi's; MIG ids are left to CUDA
    plan = plan_devices(ResourcesSpec(gpus=["GPU-0000dead"]), n_trials=4)
    assert plan.devices == ("GPU-0000dead",)
    assert plan.warning == (
        "resources.gpus lists ['GPU-0000dead'] but GPU(s) ['GPU-0000dead'] are not visible on "
        "this machine: those slots keep their GPU id but their trials will run on the CPU"
    )


def test_listed_gpus_outside_cuda_visible_devices_are_refused(fake_smi, monkeypatch) -> None:
    """Setting CUDA_VISIBLE_DEVICES=0 in a worker would reach a GPU this process was not
    given: refuse instead of warning that it "runs on the CPU"."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", ",".join(UUIDS))
    with pytest.raises(SpecError) as err:
        plan_devices(ResourcesSpec(gpus=[0, UUIDS[1]]), n_trials=4)
    assert str(err.value) == (
        "resources.gpus: every GPU must be one CUDA_VISIBLE_DEVICES gives this process "
        f"({UUIDS[0]}, {UUIDS[1]}), got 0 (list those ids, or use gpus: auto)"
    )
    assert plan_devices(ResourcesSpec(gpus=[UUIDS[1]]), n_trials=4).devices == (UUIDS[1],)


def test_the_spec_takes_uuids_and_mig_ids(make_spec) -> None:
    mig = "MIG-GPU-8932f937-d72c-4106-c12f-20bd9faed9f6/1/0"
    spec = load_spec(make_spec(resources={"gpus": [UUIDS[0], mig], "trials_per_gpu": 2}))
    assert spec.resources.gpus == (UUIDS[0], mig)
    assert load_spec(make_spec(resources={"gpus": 1})).resources.gpus == (1,)
    path = make_spec(resources={"gpus": ["gpu0"]})
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert str(err.value) == (
        f"{path}: resources.gpus: must be 'auto', 'none' or a list of GPU ids like [0, 1], "
        "got ['gpu0']"
    )
