"""The small frozen messages that cross the process boundary between orchestrator and workers."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from tbxsweep.spec import Spec


class TrialState(str, Enum):
    """How a trial ended (or that it has not). Values match Optuna's state names, but for
    INFEASIBLE: out of memory or outside `study.constraints`, which Optuna records as a
    constraint value > 0 on a pruned (no value) or completed trial."""

    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
    PRUNED = "PRUNED"
    FAIL = "FAIL"
    INFEASIBLE = "INFEASIBLE"

    @property
    def finished(self) -> bool:
        """Counts towards `n_trials` (completed, pruned or infeasible: each is an answer
        about its parameters, where a failure is not)."""
        return self in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.INFEASIBLE)

    @property
    def label(self) -> str:
        return {
            "RUNNING": "running",
            "COMPLETE": "complete",
            "PRUNED": "pruned",
            "FAIL": "failed",
            "INFEASIBLE": "infeasible",
        }[self.value]


@dataclass(frozen=True)
class SlotPlan:
    """Where workers may run: one entry per slot, a CUDA device id or "" for CPU.

    Workers claim a slot on their first task by locking `<slots_dir>/slot-<i>.lock`; the
    kernel drops the lock when a worker dies, so a restarted worker takes its place.
    """

    slots_dir: str
    devices: tuple[str, ...]
    threads_per_worker: int


@dataclass(frozen=True)
class TrialJob:
    """Everything a worker needs to run one trial."""

    number: int
    trial_id: int
    params: dict[str, Any]
    seed: int
    run_dir: str
    run_name: str
    group: str
    spec: Spec
    storage_url: str | None  # set when a pruner needs intermediate values in the storage
    slots: SlotPlan
    base_model_path: str | None
    dispatched_at: float
    repeat: int = 0
    resume_dir: str | None = None  # the run this one re-runs (its checkpoint, if any)
    # Save a model only with a best value beyond this one (the k-th best kept model's when
    # the trial was dispatched: a trial not beating it cannot enter the best k); None: any.
    model_bar: float | None = None
    # Write best.weights.h5 only with a best value beyond this one (the study.test_top_k-th
    # best trial's when dispatched: a trial not beating it is never evaluated on the test
    # split); None: any.
    weights_bar: float | None = None


@dataclass(frozen=True)
class TrialOutcome:
    """What a worker reports back about one trial."""

    number: int
    state: TrialState
    value: float | None
    best_epoch: int | None = None
    epochs_run: int = 0
    duration_s: float = 0.0
    device: str = "cpu"
    cuda_visible_devices: str | None = None
    worker_pid: int = 0
    host: str = ""
    error: str | None = None
    started_at: float = 0.0
    ended_at: float = 0.0
    first_epoch_end: float | None = None
    epoch_seconds: tuple[float, ...] = ()
    trainable_params: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    # Every objective's value, in study.metric's order (the first is `value`); empty
    # unless the trial completed.
    values: tuple[float, ...] = ()
    # Optuna constraint values by name (> 0: violated): `oom`, or a study.constraints key.
    constraints: dict[str, float] = field(default_factory=dict)
    # Whether the trial trained on the feature cache (None: not the built-in task) and the
    # seconds it spent building caches (trial/_cache.py).
    feature_cache: bool | None = None
    cache_build_s: float = 0.0


@dataclass(frozen=True)
class TaskInfo:
    """What the orchestrator must know about a task before any trial runs.

    Attributes:
        depth_max: the number of fine-tune units (weighted layers or blocks) of the base
            model, i.e. the largest valid `finetune_depth`; None when the task has none.
        base_cache_key: file-name key of the cached base model in the output directory
            (`cache/base-<key>.keras`) when the task pretrains one; None otherwise.
        description: one line for the progress display, e.g. "digits 5-9, base CNN
            pretrained on digits 0-4 (4 weighted layers)".
        feature_cache: one line for the progress display, e.g. "feature cache: off
            (task.feature_cache is false)" (trial/_cache.py `notice`).
    """

    depth_max: int | None
    base_cache_key: str | None = None
    description: str = ""
    # The sweep's one line about the feature cache: on for which depths, or off and why.
    feature_cache: str = ""


@dataclass(frozen=True)
class PrepareJob:
    """Build (or find in the cache) the base model before any trial runs."""

    spec: Spec
    base_model_path: str
    slots: SlotPlan
