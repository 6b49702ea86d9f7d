"""Worker pools: joblib's loky processes on this machine, or a Dask cluster's workers.

Both hand out `concurrent.futures.Future`s, so the scheduler's loop is the same for both.
"""

from __future__ import annotations

import contextlib
import os
import signal
from concurrent.futures import Future
from typing import Any

from tbxsweep.errors import FatalError, SpecError
from tbxsweep.jobs import SlotPlan
from tbxsweep.spec import ResourcesSpec

_first_dead: dict[int, int] = {}  # pid -> exit code, of workers that broke a loky pool


def _record_first_dead() -> None:
    """Note which workers were dead when loky declared its pool broken.

    loky then kills every other worker with SIGKILL, so afterwards a worker the OS
    killed (SIGKILL too) cannot be told from the ones loky killed. Recording the dead
    at that moment is the only exact account; should loky's internals change, the
    scheduler falls back to the exit codes it can still see.
    """
    try:
        from joblib.externals.loky import process_executor as pe

        manager = pe._ExecutorManagerThread
    except (ImportError, AttributeError):
        return
    if getattr(manager, "_tbxsweep_patched", False):
        return
    original = manager.terminate_broken

    def terminate_broken(self: Any, bpe: Any) -> Any:
        try:
            for pid, proc in dict(self.processes).items():
                if proc.exitcode is not None:
                    _first_dead[pid] = proc.exitcode
        except Exception:  # bookkeeping must never stop loky's own recovery
            pass
        return original(self, bpe)

    manager.terminate_broken = terminate_broken
    manager._tbxsweep_patched = True


def own_restart_policy() -> None:
    """In each loky worker at start: turn off loky's memory-leak heuristic.

    With psutil importable, a loky worker measures its RSS after its first task and exits
    once it has grown by 300 MB, printing "A worker stopped while some jobs were given to
    the executor". Importing TensorFlow or building a first model always grows a worker by
    more than that, so the next trial there would pay the import again (~5-6 s) for nothing.
    tbxsweep replaces a worker only when it dies (or is killed for a timeout or a stop);
    its own memory stays flat across trials (benchmarks/memory.py). loky has no public
    switch: the worker loop reads this module global after every task.
    """
    try:
        from joblib.externals.loky import process_executor
    except ImportError:  # pragma: no cover - joblib is a dependency
        return
    process_executor._USE_PSUTIL = False


class LokyPool:
    """joblib's reusable loky executor: warm worker processes, replaced after a crash."""

    def __init__(self, slots: SlotPlan) -> None:
        self.slots = slots
        self.n_slots = len(slots.devices)
        self._executor: Any = None
        self._procs: dict[int, Any] = {}
        _record_first_dead()

    def submit(self, fn: Any, job: Any) -> Future[Any]:
        from joblib.externals.loky import get_reusable_executor

        _quiet_resource_tracker()
        env = {
            "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"),
            "GRPC_VERBOSITY": os.environ.get("GRPC_VERBOSITY", "ERROR"),
        }
        # Workers start with SIGINT ignored (the disposition survives exec): a terminal's
        # Ctrl-C reaches the whole process group, and a worker still importing TensorFlow
        # would die with a KeyboardInterrupt traceback before bind_slot ignores it. The
        # orchestrator alone decides what a Ctrl-C does to running trials.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            # A pool broken by a dead worker is replaced by a fresh one here.
            self._executor = get_reusable_executor(
                max_workers=self.n_slots,
                timeout=300,
                reuse="auto",
                env=env,
                initializer=own_restart_policy,
            )
            self.snapshot()
            return self._executor.submit(fn, job)
        finally:
            signal.signal(signal.SIGINT, previous)

    def snapshot(self) -> None:
        """Remember the worker processes, to find out later which one died first."""
        if self._executor is not None:
            self._procs.update(getattr(self._executor, "_processes", {}) or {})

    def dead_workers(self) -> dict[int, int]:
        """pid -> exit code of the workers whose death broke the pool (recorded when loky
        declared it broken), else of every worker seen to have exited."""
        known = {pid: code for pid, code in _first_dead.items() if pid in self._procs}
        if known:
            return known
        return {
            pid: p.exitcode
            for pid, p in self._procs.items()
            if getattr(p, "exitcode", None) is not None
        }

    def kill_worker(self, pid: int) -> bool:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        return True

    def kill_workers(self) -> None:
        """Kill every worker and wait until they are gone: a worker that was just starting a
        trial could otherwise still create its run after the trial is recorded as stopped."""
        if self._executor is not None:
            _stop_executor(self._executor)

    def close(self) -> None:
        """Workers stay warm for the next sweep in this process (loky reuses them)."""


class DaskPool:
    """The workers of a Dask cluster (`resources.scheduler`), through its executor.

    GPU slots are the workers started with `--resources GPU=1` (one per GPU, each with its
    own CUDA_VISIBLE_DEVICES, as dask-cuda does); without GPUs every worker thread is a
    slot. `scheduler: local` starts a local cluster of separate worker processes.
    """

    def __init__(self, resources: ResourcesSpec, n_local: int, use_gpus: bool) -> None:
        import dask
        from distributed import Client, LocalCluster

        # One dead worker fails its trial once; Dask's default retries it on 3 more.
        dask.config.set({"distributed.scheduler.allowed-failures": 0})
        self._cluster: Any = None
        address = resources.scheduler or "local"
        try:
            if address == "local":
                self._cluster = LocalCluster(
                    n_workers=n_local,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                )
                self.client = Client(self._cluster)
            else:
                self.client = Client(address, timeout=30)
            self.client.wait_for_workers(1, timeout=120)
        except (OSError, TimeoutError) as exc:
            raise SpecError(
                f"resources.scheduler: cannot reach the Dask scheduler at {address}: "
                f"{' '.join(str(exc).split())[:200]}"
            ) from None
        workers = self.client.scheduler_info()["workers"].values()
        if use_gpus:
            self.n_slots = sum(int(w.get("resources", {}).get("GPU", 0)) for w in workers)
            if self.n_slots == 0:
                raise FatalError(
                    f"no Dask worker at {address} offers a GPU: start one per GPU with "
                    "`CUDA_VISIBLE_DEVICES=<id> dask worker <scheduler> --nthreads 1 "
                    "--resources GPU=1` (or dask-cuda), or set resources.gpus: none"
                )
        else:
            self.n_slots = sum(int(w.get("nthreads", 1)) for w in workers)
        self._resources = {"GPU": 1} if use_gpus else None
        # The Dask futures of the trials handed out, to cancel them: `client.futures` holds
        # only their internal states, which `client.cancel` ignores.
        self._futures: dict[Future[Any], Any] = {}

    def submit(self, fn: Any, job: Any) -> Future[Any]:
        """Run `fn(job)` on a worker; the returned Future completes with its result."""
        dask_future = self.client.submit(fn, job, pure=False, resources=self._resources)
        future: Future[Any] = Future()
        future.set_running_or_notify_cancel()
        self._futures[future] = dask_future

        def done(f: Any) -> None:
            self._futures.pop(future, None)
            try:
                future.set_result(f.result())
            except BaseException as exc:  # the trial's error, a lost worker, a cancel
                future.set_exception(exc)

        dask_future.add_done_callback(done)
        return future

    def snapshot(self) -> None:
        pass

    def dead_workers(self) -> dict[int, int]:
        return {}

    def kill_worker(self, pid: int) -> bool:
        return False  # a worker on another host is out of reach by pid

    def kill_workers(self) -> None:
        """Cancel every trial handed out, and restart the workers running them (through
        their nannies) so that they stop training now: Dask cannot interrupt a running
        task otherwise. Workers without a nanny keep running theirs to its end."""
        futures = list(self._futures.values())
        if not futures:
            return
        keys = {f.key for f in futures}
        busy: list[str] = []
        try:
            processing = self.client.processing()
            busy = [w for w, ks in processing.items() if keys & set(ks)]
        except Exception:  # the scheduler is gone: nothing runs there any more
            pass
        self.client.cancel(futures, force=True)
        if busy:
            with contextlib.suppress(Exception):  # no nanny, or the scheduler is gone
                self.client.restart_workers(busy, timeout=30, raise_for_error=False)

    def close(self) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


def release_workers() -> None:
    """Stop the idle loky workers now, for a process about to exit.

    Left alone, they are shut down at interpreter exit, one by one, which keeps the
    command waiting seconds after its last line.
    """
    try:
        from joblib.externals.loky import reusable_executor
    except ImportError:  # pragma: no cover - joblib is a dependency
        return
    executor = getattr(reusable_executor, "_executor", None)
    if executor is not None:
        _stop_executor(executor)


def _stop_executor(executor: Any) -> None:
    """Kill a loky executor's workers and wait until they are gone, then shut it down.

    The order matters. `shutdown(kill_workers=True)` drops the queued jobs and then its
    manager thread looks a dropped one up again when it was submitted a moment before (a
    warm-up, when a spec error stops the sweep at once): the thread dies with `KeyError: 3`,
    a traceback on the user's terminal (joblib 1.6). Killed first, the workers break the
    pool; loky then fails the queued jobs itself and the shutdown finds none left to drop.
    """
    procs = list((getattr(executor, "_processes", {}) or {}).values())
    for proc in procs:
        with contextlib.suppress(OSError):  # already gone
            os.kill(proc.pid, signal.SIGKILL)
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.join(timeout=5)
    executor.shutdown(wait=True)


def _quiet_resource_tracker() -> None:
    # Killing workers (Ctrl-C twice, a timed-out trial) leaves semaphores that loky's
    # resource tracker cleans up itself; its warning about them is noise to a user.
    quiet = "ignore::UserWarning:joblib.externals.loky.backend.resource_tracker"
    current = os.environ.get("PYTHONWARNINGS", "")
    if quiet not in current:
        os.environ["PYTHONWARNINGS"] = ",".join(p for p in (current, quiet) if p)
