"""Randomized fault injection of the whole orchestrator, replayable from a seed.

Each case draws from its seed: a study (n_trials, n_jobs, repeats, epochs, pruner, how
often trials prune, fail, hang, report or return NaN, crash their worker), one or two
phases of one or two real `python -m tbxsweep start SPEC` orchestrators on that study, and
faults at random moments (SIGKILL or SIGINT, once or twice, of an orchestrator or of its
whole process group as a terminal's Ctrl-C would, SIGKILL of a worker). Then it resumes
with the same command (sometimes with a lowered `--set study.n_trials=`) until done and
checks the invariants (`_invariants`): exactly n_trials finished, numbers unique, nothing
left RUNNING, repeat values the mean of their repeats, no two fresh trials with the same
parameters, every run directory a trial's, no "internal error" or traceback in any
orchestrator's output, and `tbxsweep check OUTPUT_DIR` exit 0 (a real TensorBoard server
compared with the storage and leaderboard.csv).

Storage: SQLite in the case's output dir; PostgreSQL when TBXSWEEP_TEST_PG_URL is set
(`--pg URL` too), one study name per case.

    python tests/chaos.py --seeds 50 [--start 1000]   # cases 1000..1049
    python tests/chaos.py --seed 1017 --keep -v       # replay one, keep its files
    CHAOS_TREE=/tmp/snap python tests/chaos.py ...     # run the tbxsweep copied to /tmp/snap

One line per case (seed, what it drew, ok/FAIL and why), the failing seeds at the end,
exit 1 if any failed. tests/schedule/test_chaos.py runs a fixed set of seeds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

FAULT_KINDS = ("kill", "int", "int2", "group_int", "group_int2", "kill_worker")
# How long a phase's orchestrators may take to exit once its faults are sent, and a
# final resume to finish (fake trials last 0.1-1 s; a hang is cut at trial_timeout_s).
PHASE_TIMEOUT_S = 120.0
FINAL_TIMEOUT_S = 180.0
TRIAL_TIMEOUT_S = 4.0
STALE_AFTER_S = 5.0
GRACE_S = 1.5
STALL_S = 2.5
# done, interrupted (Ctrl-C: 130, or killed by a late second one, which a shell shows as
# 130 too), killed by the test
OK_EXIT = {0, 130, -signal.SIGINT, -signal.SIGKILL}


@dataclass(frozen=True)
class Fault:
    at_s: float  # seconds after the phase's first orchestrator had workers
    kind: str  # one of FAULT_KINDS
    target: int  # the orchestrator of the phase it hits (kill_worker: any of its workers)

    def __str__(self) -> str:
        return f"{self.kind}#{self.target}@{self.at_s:.1f}s"


@dataclass(frozen=True)
class Phase:
    """Orchestrators started on the study, then faults at random moments."""

    hosts: tuple[str, ...]  # TBXSWEEP_HOST of each orchestrator; "" = this host's name
    stagger_s: float  # the second orchestrator starts this much later
    faults: tuple[Fault, ...]
    settle: bool  # wait for the previous phase's workers to be gone before starting

    def __str__(self) -> str:
        hosts = "" if not any(self.hosts) else "/hosts"
        stag = f"+{self.stagger_s:.1f}s" if len(self.hosts) > 1 and self.stagger_s else ""
        faults = ",".join(map(str, self.faults)) or "none"
        return f"{len(self.hosts)}orch{hosts}{stag}[{faults}]{'' if self.settle else '!'}"


@dataclass(frozen=True)
class Case:
    seed: int
    n_trials: int
    n_jobs: int
    repeats: int
    epochs: int
    pruner: str
    behaviour: dict[str, float]  # probability of each fake_trials.CHAOS_KINDS
    phases: tuple[Phase, ...]
    final_n_trials: int | None  # the final resume's lowered study.n_trials, or None
    final_orchestrators: int
    storage: str | None = None  # a PostgreSQL URL, else SQLite in the output dir
    suffix: str = ""  # makes the study name unique in a shared PostgreSQL database

    @property
    def study_name(self) -> str:
        return f"chaos-{self.seed}{self.suffix}"

    def summary(self) -> str:
        bad = ",".join(f"{k}={v:g}" for k, v in self.behaviour.items() if v)
        final = f"n->{self.final_n_trials}" if self.final_n_trials else "resume"
        return (
            f"n={self.n_trials} jobs={self.n_jobs} rep={self.repeats} ep={self.epochs} "
            f"pruner={self.pruner} trials[{bad or 'ok'}] "
            + " ".join(str(p) for p in self.phases)
            + f" final={self.final_orchestrators}x{final}"
            + (" pg" if self.storage else "")
        )


def draw_case(seed: int, storage: str | None = None) -> Case:
    """Everything a case does, from its seed alone (timing aside)."""
    rng = random.Random(seed)
    n_trials = rng.randint(3, 8)
    behaviour = {
        "prune": rng.choice([0.0, 0.0, 0.3]),
        "fail": rng.choice([0.0, 0.15]),
        "nan_report": rng.choice([0.0, 0.1]),
        "nan_return": rng.choice([0.0, 0.1]),
        "hang": rng.choice([0.0, 0.0, 0.1]),
        "crash": rng.choice([0.0, 0.0, 0.0, 0.08]),
    }
    phases = []
    for i in range(rng.choice([1, 1, 2])):
        n_orch = rng.choice([1, 1, 2])
        hosts = ("",) * n_orch
        if n_orch == 2 and rng.random() < 0.3:
            hosts = ("host-a", "host-b")  # one output dir, heartbeats the only liveness
        faults = [
            Fault(
                at_s=round(rng.uniform(0.0, 3.0), 2),
                kind=rng.choice(FAULT_KINDS),
                target=rng.randrange(n_orch),
            )
            for _ in range(rng.choice([1, 1, 2]))
        ]
        phases.append(
            Phase(
                hosts=hosts,
                stagger_s=rng.choice([0.0, round(rng.uniform(0.5, 3.0), 2)]),
                faults=tuple(sorted(faults, key=lambda f: f.at_s)),
                settle=i == 0 or rng.random() < 0.5,
            )
        )
    final = rng.randint(1, n_trials - 1) if rng.random() < 0.25 else None
    return Case(
        seed=seed,
        n_trials=n_trials,
        n_jobs=rng.randint(1, 3),
        repeats=rng.choice([1, 1, 2, 3]),
        epochs=rng.randint(1, 3),
        pruner=rng.choice(["median", "none"]),
        behaviour=behaviour,
        phases=tuple(phases),
        final_n_trials=final,
        final_orchestrators=rng.choice([1, 1, 1, 2]),
        storage=storage,
        suffix=f"-{uuid.uuid4().hex[:8]}" if storage else "",
    )


FEATURES = (
    *FAULT_KINDS,
    "repeats",
    "two_orchestrators",
    "two_hosts",
    "staggered",
    "no_settle",
    "two_phases",
    "lowered_n_trials",
    "two_final",
    "prune",
    "fail",
    "nan",
    "hang",
    "crash",
)


def features(case: Case) -> set[str]:
    """What a case exercises (names from FEATURES): for choosing CI's seeds."""
    out = {f.kind for p in case.phases for f in p.faults}
    out |= {k for k in ("prune", "fail", "hang", "crash") if case.behaviour[k]}
    flags = {
        "nan": case.behaviour["nan_report"] or case.behaviour["nan_return"],
        "repeats": case.repeats > 1,
        "two_orchestrators": any(len(p.hosts) > 1 for p in case.phases),
        "two_hosts": any(any(p.hosts) for p in case.phases),
        "staggered": any(len(p.hosts) > 1 and p.stagger_s for p in case.phases),
        "no_settle": any(not p.settle for p in case.phases),
        "two_phases": len(case.phases) > 1,
        "lowered_n_trials": case.final_n_trials is not None,
        "two_final": case.final_orchestrators > 1,
    }
    return out | {k for k, v in flags.items() if v}


def spec_dict(case: Case, out: Path) -> dict[str, Any]:
    study: dict[str, Any] = {
        "name": case.study_name,
        "direction": "maximize",
        "metric": "score",
        "n_trials": case.n_trials,
        "sampler": {"name": "random", "seed": 0},  # as the shipped specs: seed 0
        "pruner": {"name": case.pruner, "n_startup_trials": 1, "n_warmup_steps": 0},
        "repeats": case.repeats,
        "max_consecutive_failures": 1000,
        "stale_after_s": STALE_AFTER_S,
    }
    if case.storage:
        study["storage"] = case.storage
    return {
        "study": study,
        "search_space": {
            "x": {"type": "float", "low": 0.0, "high": 1.0},
            "k": {"type": "int", "low": 1, "high": 8},
            "opt": {"type": "categorical", "choices": ["adam", "sgd"]},
        },
        "task": {
            "train": "fake_trials:chaos",
            "epochs": case.epochs,
            "trial_timeout_s": TRIAL_TIMEOUT_S,
        },
        "resources": {"gpus": "none", "n_jobs": case.n_jobs, "grace_s": GRACE_S},
        "output": {"dir": str(out)},
    }


# --- running a case ------------------------------------------------------------------------


@dataclass
class Orch:
    """One `tbxsweep start` process and what it left."""

    name: str
    proc: subprocess.Popen[bytes]
    log_dir: Path
    signals: list[str] = field(default_factory=list)

    @property
    def stderr(self) -> str:
        return (self.log_dir / f"{self.name}.err").read_text(errors="replace")

    @property
    def stdout(self) -> str:
        return (self.log_dir / f"{self.name}.out").read_text(errors="replace")


class Run:
    """The processes of one case, its log and the problems found."""

    def __init__(self, case: Case, root: Path, verbose: bool = False) -> None:
        self.case = case
        self.root = root
        self.out = root / "out"
        self.spec_path = root / "spec.yaml"
        self.verbose = verbose
        self.t0 = time.monotonic()
        self.orchs: list[Orch] = []
        self.problems: list[str] = []
        self.seen: dict[int, float] = {}  # pid -> create_time of every process we started
        self.stacks = root / "stacks"
        self.stacks.mkdir(exist_ok=True)
        self._dumped: set[tuple[int, int]] = set()
        self._last_scan = 0.0
        self._log = (root / "chaos.log").open("a")
        self.spec_path.write_text(yaml.safe_dump(spec_dict(case, self.out), sort_keys=False))

    def log(self, text: str) -> None:
        line = f"{time.monotonic() - self.t0:7.2f}s {text}"
        self._log.write(line + "\n")
        self._log.flush()
        if self.verbose:
            print("    " + line, flush=True)

    def env(self, host: str) -> dict[str, str]:
        env = dict(os.environ)
        # CHAOS_TREE: a copy of the repository whose tbxsweep to run (a fixed snapshot while
        # others edit the working tree); by default the installed one.
        tree = [os.environ["CHAOS_TREE"]] if os.environ.get("CHAOS_TREE") else []
        env["PYTHONPATH"] = os.pathsep.join([*tree, str(TESTS), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        env["FAKE_CHAOS"] = json.dumps(
            {
                "seed": self.case.seed,
                "sleep": [0.1, 1.0],
                "hang_s": 30.0,
                "stacks": str(self.stacks),
                **self.case.behaviour,
            }
        )
        env.pop("TBXSWEEP_HOST", None)
        if host:
            env["TBXSWEEP_HOST"] = host
        if self.case.storage:
            env["TBXSWEEP_STORAGE"] = self.case.storage  # for `check`: sweep.json is redacted
        return env

    def start(self, host: str, sets: tuple[str, ...] = ()) -> Orch:
        name = f"orch{len(self.orchs)}"
        args = [sys.executable, "-m", "tbxsweep", "start", str(self.spec_path)]
        for s in sets:
            args += ["--set", s]
        with (
            (self.root / f"{name}.out").open("wb") as out,
            (self.root / f"{name}.err").open("wb") as err,
        ):
            # Its own session: a "terminal Ctrl-C" is SIGINT to this process group, and
            # output goes to files so orphaned workers holding them never block us.
            proc = subprocess.Popen(
                args, env=self.env(host), stdout=out, stderr=err, start_new_session=True
            )
        orch = Orch(name, proc, self.root)
        self.orchs.append(orch)
        self._remember(proc.pid)
        self.log(f"{name} pid {proc.pid} start host={host or '-'} {' '.join(sets)}")
        return orch

    def _remember(self, pid: int) -> None:
        import psutil

        with contextlib.suppress(psutil.Error):
            p = psutil.Process(pid)
            self.seen.setdefault(pid, p.create_time())
            for c in p.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    self.seen.setdefault(c.pid, c.create_time())

    def watch(self, orchs: list[Orch]) -> None:
        for o in orchs:
            if o.proc.poll() is None:
                self._remember(o.proc.pid)
        if time.monotonic() - self._last_scan > 0.5:
            self._last_scan = time.monotonic()
            self._dump_stalled()

    def _dump_stalled(self) -> None:
        """A worker silent for STALL_S in its latest trial: have it write its stack to
        stacks/<pid>.txt (a fake trial's epoch is at most 1 s; hangs stall on purpose)."""
        latest: dict[int, dict[str, Any]] = {}
        for path in self.out.glob("trial-*/**/trial.json"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                rec = json.loads(path.read_text())
                if rec["started_at"] >= latest.get(rec["pid"], {}).get("started_at", 0):
                    latest[rec["pid"]] = rec
        for pid, rec in latest.items():
            key = (pid, rec["number"])
            if key in self._dumped or time.time() - rec["heartbeat_at"] < STALL_S:
                continue
            # after an epoch the handler is set (SIGUSR1 would end the process before)
            if rec.get("epochs_run", 0) < 1 or pid not in self.seen:
                continue
            self._dumped.add(key)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGUSR1)
                self.log(f"trial {rec['number']} silent for {STALL_S} s: stack of {pid} dumped")

    def workers(self, orch: Orch) -> list[int]:
        """Live worker pids of `orch`: those running a trial first (from trial.json)."""
        import psutil

        try:
            kids = {
                c.pid: c
                for c in psutil.Process(orch.proc.pid).children(recursive=False)
                if "resource_tracker" not in " ".join(c.cmdline())
            }
        except psutil.Error:
            return []
        busy = []
        for rec in self.out.glob("trial-*/**/trial.json"):
            with contextlib.suppress(OSError, ValueError):
                pid = int(json.loads(rec.read_text())["pid"])
                if pid in kids:
                    busy.append(pid)
        return busy + [p for p in kids if p not in busy]

    def wait_started(self, orchs: list[Orch], timeout: float = 60.0) -> None:
        """Until an orchestrator has worker processes (its signal handlers are set)."""
        import psutil

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.watch(orchs)
            for o in orchs:
                if o.proc.poll() is not None:
                    return
                with contextlib.suppress(psutil.Error):
                    if psutil.Process(o.proc.pid).children():
                        return
            time.sleep(0.05)

    def fault(self, f: Fault, orchs: list[Orch]) -> None:
        o = orchs[f.target]
        alive = o.proc.poll() is None
        if f.kind == "kill_worker":
            pids = self.workers(o) if alive else []
            if not pids:
                self.log(f"{f}: {o.name} has no worker, skipped")
                return
            self._signal(pids[0], signal.SIGKILL, f"{f}: worker of {o.name}")
            return
        if not alive:
            self.log(f"{f}: {o.name} already exited, skipped")
            return
        o.signals.append(f.kind)
        sig = signal.SIGKILL if f.kind == "kill" else signal.SIGINT
        group = f.kind.startswith("group")
        self._signal(o.proc.pid, sig, f"{f}: {o.name}", group)
        if f.kind.endswith("2"):
            time.sleep(random.Random(f"{self.case.seed}/{f}").uniform(0.1, 1.0))
            self._signal(o.proc.pid, sig, f"{f} again: {o.name}", group)

    def _signal(self, pid: int, sig: int, what: str, group: bool = False) -> None:
        self.log(f"{what} <- {signal.Signals(sig).name}{' (group)' if group else ''}")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)

    def wait_exit(self, orchs: list[Orch], timeout: float) -> None:
        """Wait for the orchestrators to exit. One still printing progress (a case whose
        crash rate makes loky restart its pool over and over is slow, not stuck) gets more
        time, up to three times `timeout`; one silent for 30 s past `timeout` is stuck."""
        start = time.monotonic()
        sizes = {o.name: -1 for o in orchs}
        last_progress = start
        # poll() every one each time round: an exited orchestrator left unreaped is a
        # zombie, which the others would take for a live owner of its trials.
        while [o for o in orchs if o.proc.poll() is None]:
            now = time.monotonic()
            grown = {o.name: len(o.stdout) for o in orchs}
            if grown != sizes:
                sizes, last_progress = grown, now
            if now - start > timeout and (now - last_progress > 30 or now - start > 3 * timeout):
                break
            self.watch(orchs)
            time.sleep(0.1)
        for o in orchs:
            if o.proc.poll() is None:
                waited = time.monotonic() - start
                self.problems.append(f"{o.name} still running {waited:.0f} s after its phase")
                self._signal(o.proc.pid, signal.SIGKILL, f"{o.name} (stuck)")
                o.proc.wait(30)
            self.log(f"{o.name} exit {o.proc.returncode}")

    def settle(self, timeout: float = 5.0) -> None:
        """Let the processes of earlier orchestrators end before the next start.

        A killed orchestrator's idle loky workers outlive it until loky's idle timeout
        (300 s), holding their memory (a GPU's, with real trials); this waits a little,
        then ends them as a user or the OS would.
        """
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        if left := self.alive():
            self.log(f"still alive after {timeout:.0f} s, killed: {left}")
            self.kill_alive()

    def alive(self) -> list[int]:
        import psutil

        out = []
        for pid, created in self.seen.items():
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(pid)
                if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(pid)
        return out

    def cleanup(self) -> None:
        for o in self.orchs:
            if o.proc.poll() is None:
                o.proc.kill()
            with contextlib.suppress(Exception):
                o.proc.wait(10)
        self.kill_alive()
        self._log.close()

    def kill_alive(self) -> None:
        import psutil

        for pid in self.alive():  # only processes this case started, checked by start time
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()


def run_phase(run: Run, phase: Phase) -> None:
    if phase.settle:
        run.settle()
    orchs = [run.start(phase.hosts[0])]
    if len(phase.hosts) > 1:
        if phase.stagger_s:
            time.sleep(phase.stagger_s)
        orchs.append(run.start(phase.hosts[1]))
    run.wait_started(orchs)
    began = time.monotonic()
    for f in phase.faults:
        while time.monotonic() - began < f.at_s:
            run.watch(orchs)
            time.sleep(0.05)
        run.fault(f, orchs)
    run.wait_exit(orchs, PHASE_TIMEOUT_S)
    for o in orchs:
        rc = o.proc.returncode
        if rc not in OK_EXIT:
            run.problems.append(f"{o.name} (signals {o.signals or 'none'}) exited {rc}")


def run_final(run: Run) -> int:
    """Resume with the same command until the study is done; returns n_trials expected."""
    case = run.case
    run.settle()
    expected = case.n_trials
    sets: tuple[str, ...] = ()
    if case.final_n_trials is not None:
        before = len(finished(load_trials(run)))
        expected = max(case.final_n_trials, before)
        sets = (f"study.n_trials={case.final_n_trials}",)
        run.log(f"{before} finished before the lowered resume: expect {expected}")
    orchs = [run.start("", sets) for _ in range(case.final_orchestrators)]
    run.wait_exit(orchs, FINAL_TIMEOUT_S)
    for o in orchs:
        if o.proc.returncode != 0:
            tail = " | ".join(o.stderr.strip().splitlines()[-2:])
            run.problems.append(f"final {o.name} exited {o.proc.returncode}: {tail}")
    return expected


# --- the invariants --------------------------------------------------------------------------


def load_trials(run: Run) -> list[Any]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not run.case.storage and not (run.out / "study.db").exists():
        return []  # killed before it created the output directory
    url = run.case.storage or f"sqlite:///{run.out / 'study.db'}"
    try:
        return optuna.load_study(study_name=run.case.study_name, storage=url).get_trials()
    except KeyError:  # killed before it created the study
        return []


def finished(trials: list[Any]) -> list[Any]:
    return [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]


def _invariants(run: Run, expected: int) -> None:
    case, p = run.case, run.problems
    for o in run.orchs:
        err = o.stderr
        for needle in ("internal error", "Traceback"):
            if needle in err:
                line = next(ln for ln in err.splitlines() if needle in ln)
                p.append(f"{o.name} stderr: {line.strip()[:300]}")
    trials = load_trials(run)
    done = finished(trials)
    if len(done) != expected:
        p.append(f"{len(done)} trials finished, expected {expected}")
    numbers = [t.number for t in trials]
    if len(numbers) != len(set(numbers)):
        p.append(f"trial numbers repeat: {numbers}")
    if running := [t.number for t in trials if t.state.name == "RUNNING"]:
        p.append(f"trials left RUNNING: {running}")
    for t in trials:
        rec = t.user_attrs.get("tbxsweep", {})
        if t.state.name == "COMPLETE" and case.repeats > 1:
            values = rec.get("values") or []
            if len(values) != case.repeats:
                p.append(f"trial {t.number}: {len(values)} repeat values, not {case.repeats}")
            elif not math.isclose(t.value, sum(values) / len(values), rel_tol=1e-9):
                p.append(f"trial {t.number}: value {t.value} is not the mean of {values}")
    _distinct_params(trials, p)
    _run_dirs(run, trials)
    res = subprocess.run(
        [sys.executable, "-m", "tbxsweep", "check", str(run.out)],
        env=run.env(""),
        capture_output=True,
        text=True,
        timeout=180,
    )
    run.log(f"check exit {res.returncode}: {res.stdout.strip()} {res.stderr.strip()}")
    if res.returncode != 0:
        lines = (res.stdout + res.stderr).strip().splitlines()
        p.append(f"check exit {res.returncode}: " + "; ".join(lines[:6]))


def _distinct_params(trials: list[Any], problems: list[str]) -> None:
    """x is continuous: equal parameters mean a re-run (tbxsweep_retry_of) or a sampler
    that drew the same point twice (two orchestrators with one seed)."""
    groups: dict[str, list[Any]] = {}
    for t in trials:
        groups.setdefault(json.dumps(t.params, sort_keys=True), []).append(t)
    for same in groups.values():
        fresh = [t.number for t in same if "tbxsweep_retry_of" not in t.user_attrs]
        if len(fresh) > 1:
            problems.append(f"trials {fresh} drew the same parameters {same[0].params}")


def _run_dirs(run: Run, trials: list[Any]) -> None:
    """Every trial-NNNN directory belongs to a trial that still shows a run."""
    import optuna

    url = run.case.storage or f"sqlite:///{run.out / 'study.db'}"
    attrs = optuna.load_study(study_name=run.case.study_name, storage=url).user_attrs
    aside = {int(k) for k in attrs.get("tbxsweep_aside", {})}
    shown = {f"trial-{t.number:04d}" for t in trials if t.number not in aside}
    for d in sorted(run.out.glob("trial-*")):
        if d.name not in shown:
            what = "is aside" if int(d.name[6:]) in aside else "has no trial"
            run.problems.append(f"{d.name}/ is in the output dir but its trial {what}")


# --- one case, many cases ----------------------------------------------------------------


@dataclass
class Result:
    case: Case
    problems: list[str]
    seconds: float
    root: Path

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        status = "ok" if self.ok else "FAIL: " + " || ".join(self.problems)
        return f"seed={self.case.seed} {self.case.summary()} ({self.seconds:.0f} s) {status}"


def run_case(case: Case, root: Path, verbose: bool = False) -> Result:
    """Run one case in `root` (created); returns the problems found (none: ok)."""
    root.mkdir(parents=True, exist_ok=True)
    run = Run(case, root, verbose)
    run.log(f"seed={case.seed} {case.summary()}")
    try:
        for phase in case.phases:
            run_phase(run, phase)
        expected = run_final(run)
        _invariants(run, expected)
    except Exception as exc:  # the harness itself must report, not crash the series
        run.problems.append(f"chaos harness: {type(exc).__name__}: {exc}")
    finally:
        run.cleanup()
    return Result(case, run.problems, time.monotonic() - run.t0, root)


@contextlib.contextmanager
def _workdir(path: str | None) -> Iterator[Path]:
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        yield Path(path)
    else:
        with tempfile.TemporaryDirectory(prefix="tbxsweep-chaos-") as tmp:
            yield Path(tmp)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=10, help="how many cases (default 10)")
    ap.add_argument("--start", type=int, default=0, help="the first seed (default 0)")
    ap.add_argument("--seed", type=int, action="append", help="replay this seed (repeatable)")
    ap.add_argument("--pg", default=os.environ.get("TBXSWEEP_TEST_PG_URL"), help="PostgreSQL")
    ap.add_argument("--workdir", help="keep the cases' files here (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep passing cases' files too")
    ap.add_argument("--dry", action="store_true", help="print what each seed draws, run none")
    ap.add_argument("-v", "--verbose", action="store_true", help="print each case's events")
    args = ap.parse_args(argv)
    seeds = args.seed or list(range(args.start, args.start + args.seeds))
    failed: list[int] = []
    with _workdir(args.workdir) as work:
        for seed in seeds:
            case = draw_case(seed, args.pg)
            if args.dry:
                print(f"seed={seed} {case.summary()}", flush=True)
                continue
            root = work / f"seed-{seed}"
            shutil.rmtree(root, ignore_errors=True)
            res = run_case(case, root, args.verbose)
            print(res.line(), flush=True)
            if res.ok and not args.keep:
                shutil.rmtree(root, ignore_errors=True)
            elif not res.ok:
                failed.append(seed)
                if args.workdir:
                    print(f"    files: {root}", flush=True)
    if not args.dry:
        print(f"{len(seeds) - len(failed)}/{len(seeds)} ok; failing seeds: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
