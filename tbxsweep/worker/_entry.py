"""The functions the orchestrator submits to the worker pool."""

from __future__ import annotations

import ast
import contextlib
import gc
import importlib
import importlib.util
import sys
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from tbxsweep.jobs import PrepareJob, SlotPlan, TaskInfo, TrialJob, TrialOutcome
from tbxsweep.spec import Spec
from tbxsweep.worker._bind import bind_slot
from tbxsweep.worker._quiet import import_tensorflow, quiet_startup

if TYPE_CHECKING:  # the orchestrator imports this module: tbxsweep.trial stays out of it
    from tbxsweep.trial import HeldOutJob

# Importing any of these imports TensorFlow.
_TF_MODULES = frozenset({"tensorflow", "keras", "tf_keras", "tensorflow_hub", "keras_hub"})
# A warm-up's PrepareJob.base_model_path: "" loads the base cached in the spec's output
# directory, if there is one; SKIP_BASE leaves the base to the trials (a forked sweep
# writes to another directory, where it pretrains its own).
SKIP_BASE = "-"
_following: set[str] = set()  # refs whose imported names uses_tensorflow is following
_frozen: list[bool] = []  # once this process froze its imports (gc.freeze, in _ready)


def run_job(job: TrialJob) -> TrialOutcome:
    """Run one trial in this worker process (pinning the process to a slot first)."""
    device = _ready(job.spec, job.slots)
    from tbxsweep.trial import run_trial

    return run_trial(job, device)


def prepare_base(job: PrepareJob) -> None:
    """Make sure the base model exists (pretraining it once if the task needs it)."""
    _ready(job.spec, job.slots)
    from tbxsweep.trial import prepare_base_model

    prepare_base_model(job.spec, job.base_model_path)


def warm_up(job: PrepareJob) -> None:
    """Ready a worker for its first trial while the orchestrator sets up the sweep.

    Whatever the first trial would otherwise pay for is done here, once per process:
    TensorFlow's import (quietly), and then for the built-in task its data and the cached
    base model, for a `task.train` function its module. A problem is left for the first
    trial to report, where it says which trial it hit.
    """
    _ready(job.spec, job.slots)
    if job.spec.task.train is not None:
        module = job.spec.task.train.partition(":")[0]
        with contextlib.suppress(Exception), quiet_startup():
            importlib.import_module(module)
        gc.freeze()  # the module's objects too: see _ready
        return
    from tbxsweep.trial import preload_base, warm_up_worker

    warm_up_worker(job.spec)
    if job.base_model_path != SKIP_BASE:
        with contextlib.suppress(Exception):
            preload_base(job.spec)
    gc.freeze()  # the data and the base live as long as the worker: see _ready


def evaluate_test(job: HeldOutJob) -> dict[int, dict[str, float]]:
    """Evaluate the sweep's best trials on the held-out test split (its last step)."""
    _ready(job.spec, job.slots)
    from tbxsweep.trial import evaluate_held_out

    return evaluate_held_out(job)


def describe(job: PrepareJob) -> TaskInfo:
    """Build the base model (without training or writing anything) and describe it."""
    _ready(job.spec, job.slots)
    from tbxsweep.trial import describe_task

    return describe_task(job.spec)


def _ready(spec: Spec, slots: SlotPlan) -> str:
    """Pin this process to its slot, then import TensorFlow quietly where the task uses it.

    The pin must come first: TensorFlow reads CUDA_VISIBLE_DEVICES when it is imported.
    A `task.train` function may not use TensorFlow at all (PyTorch, scikit-learn, a test's
    fake): it is imported for one that does (`uses_tensorflow`).
    """
    device = bind_slot(slots)
    if "tensorflow" not in sys.modules:
        # Quiet as a whole: finding a module runs its packages' __init__, which may
        # import TensorFlow too.
        with quiet_startup():
            if spec.task.train is None or uses_tensorflow(spec.task.train):
                import_tensorflow()
    if not _frozen:
        # A full garbage collection walks every object the process tracks: after
        # TensorFlow's import some 400,000, a third of a second. loky collects after every
        # task (in the worker, before it takes the next trial), Keras's clear_session
        # collects, and so does Python now and then: each would pay for modules that live
        # as long as the process. Frozen, they are skipped by every collection (a few ms
        # after a trial); they hold no garbage worth finding. Here, at a process's first
        # task: a worker may get no warm-up (another worker took both, or it replaced one).
        gc.freeze()
        _frozen.append(True)
    return device


@cache
def uses_tensorflow(ref: str) -> bool:
    """Whether the `module:function` of a `task.train` imports TensorFlow or Keras: its
    module at its top, or the function, or a function of the module it names, inside its
    body (where training code often imports Keras, to keep the module cheap to import).
    A function the module imports from another (a package's `from .train import train`)
    is followed there.

    The source is read, not run. What the module imports through modules of its own is
    imported with it in the warm-up anyway; a miss costs only the first trial's time.
    """
    module, _, name = ref.partition(":")
    try:
        found = importlib.util.find_spec(module)
        origin = found.origin if found is not None else None
        if origin is None or not origin.endswith(".py"):
            return False
        tree = ast.parse(Path(origin).read_bytes(), origin)
    except Exception:  # not found, not Python source, a syntax error: the trial says so
        return False
    package = module if origin.endswith("__init__.py") else module.rpartition(".")[0]
    defs: dict[str, ast.AST] = {}
    imported: dict[str, str] = {}  # a name the module imports from another -> module:name
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defs[node.name] = node
            continue
        if any(_imports_tf(n) for n in ast.walk(node)):
            return True
        if isinstance(node, ast.ImportFrom):
            with contextlib.suppress(ImportError, ValueError):
                source = importlib.util.resolve_name(
                    "." * node.level + (node.module or ""), package
                )
                for alias in node.names:
                    imported[alias.asname or alias.name] = f"{source}:{alias.name}"
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        if current in imported:
            if imported[current] not in _following:
                _following.add(ref)
                try:
                    if uses_tensorflow(imported[current]):
                        return True
                finally:
                    _following.discard(ref)
            continue
        for sub in ast.walk(defs.get(current, ast.Pass())):
            if _imports_tf(sub):
                return True
            if isinstance(sub, ast.Name) and (sub.id in defs or sub.id in imported):
                todo.append(sub.id)
    return False


def _imports_tf(node: ast.AST) -> bool:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        names = [node.module]
    else:
        return False
    return any(n.partition(".")[0] in _TF_MODULES for n in names)
