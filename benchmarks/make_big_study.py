"""Write a tbxsweep output directory holding a study with many finished trials.

    python benchmarks/make_big_study.py --out /tmp/big              # 2,000 trials
    python benchmarks/make_big_study.py --out /tmp/small --trials 50

Nothing is trained: the trials are made up, but stored as `tbxsweep start` stores them,
so that `tbxsweep leaderboard`, `tbxsweep start` (continuing the study) and the sampler
see what they would see after a long sweep:
  OUT/spec.yaml   the spec (search space of sweeps/lr.yaml, metric `score`, median pruner,
                  `task.train: fake_trials:train`, so continuing it needs PYTHONPATH=tests)
  OUT/study.db    the Optuna study, created by tbxsweep's own `open_study` (its sampler,
                  the spec stored on the study); per trial the params, one intermediate value
                  per epoch run, the owner and heartbeat attrs and the "tbxsweep" record with
                  the fields the scheduler's `_finish` writes
  OUT/sweep.json  written from tbxsweep's `SweepInfo`, as `tbxsweep start` writes it
States: about 35% complete, 60% pruned (after 2-5 of 6 epochs), 5% failed, seeded.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO

EPOCHS = 6


def spec_dict(out: Path, n_trials: int) -> dict[str, Any]:
    lr = yaml.safe_load((REPO / "sweeps" / "lr.yaml").read_text())
    return {
        "study": {
            "name": "big",
            "direction": "maximize",
            "metric": "score",
            "n_trials": n_trials,
            "sampler": {"name": "tpe", "seed": 0},
            "pruner": {"name": "median", "n_warmup_steps": 2},
        },
        "search_space": lr["search_space"],
        "task": {"train": "fake_trials:train", "epochs": EPOCHS},
        "resources": {"gpus": "none", "n_jobs": 2},
        "output": {"dir": str(out)},
    }


def curve(params: dict[str, Any], rng: random.Random) -> list[float]:
    """A plausible validation-accuracy curve for the parameters, with noise."""
    lr_pen = 0.08 * (math.log10(float(params["learning_rate"])) + 2.5) ** 2
    top = 0.97 - lr_pen - 0.04 * abs(int(params["finetune_depth"]) - 3)
    top -= 0.01 * math.log2(int(params["batch_size"]) / 16)
    return [
        max(0.05, min(0.999, top * (1 - math.exp(-(e + 1) / 1.5)) + rng.gauss(0, 0.01)))
        for e in range(EPOCHS)
    ]


def make(out: Path, n: int, seed: int) -> dict[str, Any]:
    import optuna
    from sqlalchemy import event

    from tbxsweep.spec import load_spec
    from tbxsweep.study import SweepInfo, distributions, open_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    spec_path = out / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec_dict(out, n), sort_keys=False))
    spec = load_spec(str(spec_path), ())
    dists = distributions(spec)
    storage = f"sqlite:///{(out / 'study.db').resolve()}"
    open_study(spec, storage, dists=dists, where=str(spec_path))
    info = SweepInfo.of(spec)
    (out / "sweep.json").write_text(
        json.dumps(
            {**info.__dict__, "params": list(info.params), "created_at": time.time()},
            indent=2,
            default=str,
        )
    )
    rng = random.Random(seed)
    host = socket.gethostname()
    t = time.time() - n * 5.0
    states = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0}
    trials = []
    for number in range(n):
        params = {k: _sample(d, rng) for k, d in dists.items()}
        values = curve(params, rng)
        u = rng.random()
        if u < 0.05:
            state, run = optuna.trial.TrialState.FAIL, 1
        elif u < 0.65:
            state, run = optuna.trial.TrialState.PRUNED, rng.randint(2, EPOCHS - 1)
        else:
            state, run = optuna.trial.TrialState.COMPLETE, EPOCHS
        states[state.name] += 1
        epoch_s = [rng.uniform(0.7, 1.1)] + [rng.uniform(0.1, 0.2) for _ in range(run - 1)]
        dispatched = t + number * 5.0
        started = dispatched + rng.uniform(0.002, 0.02)
        ended = started + sum(epoch_s) + 0.3
        best = max(values[:run]) if state.name != "FAIL" else None
        record = {
            "run": f"trial-{number:04d}",
            "runs": [f"trial-{number:04d}"],
            "device": "cpu",
            "cuda_visible_devices": None,
            "worker_pid": 40000 + number % 2,
            "host": host,
            "best_value": best,
            "values": [best] if best is not None else [],
            "best_epoch": values.index(best) + 1 if best is not None else None,
            "epochs_run": run if state.name != "FAIL" else 0,
            "duration_s": ended - started,
            "trainable_params": 38000 + 1000 * int(params["finetune_depth"]),
            "feature_cache": None,
            "cache_build_s": 0.0,
            "error": "ValueError: made-up failure (make_big_study.py)"
            if state.name == "FAIL"
            else None,
            "dispatched_at": dispatched,
            "started_at": started,
            "ended_at": ended,
            "first_epoch_end": started + epoch_s[0] if state.name != "FAIL" else None,
            "epoch_seconds": epoch_s if state.name != "FAIL" else [],
            "seeds": [number],
        }
        trials.append(
            optuna.trial.create_trial(
                state=state,
                value=best if state.name == "COMPLETE" else None,
                params=params,
                distributions=dists,
                user_attrs={
                    "tbxsweep_owner": {"host": host, "pid": 1, "start": dispatched - 60},
                    "tbxsweep_heartbeat": ended,
                    "tbxsweep": record,
                },
                intermediate_values=(
                    {e + 1: values[e] for e in range(run)} if state.name != "FAIL" else {}
                ),
            )
        )
    # One transaction per trial, each synced to disk, is most of the time: not needed for
    # a file that is written once here and only read afterwards.
    fast = optuna.storages.RDBStorage(storage)
    event.listen(fast.engine, "connect", lambda conn, _: conn.execute("PRAGMA synchronous=OFF"))
    fast.engine.dispose()
    optuna.load_study(study_name=spec.study.name, storage=fast).add_trials(trials)
    return {
        "dir": str(out),
        "trials": n,
        **{s.lower(): c for s, c in states.items()},
        "finished": states["COMPLETE"] + states["PRUNED"],
        "db_mb": os.path.getsize(out / "study.db") / 2**20,
    }


def _sample(dist: Any, rng: random.Random) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if isinstance(dist, CategoricalDistribution):
        return rng.choice(list(dist.choices))
    if isinstance(dist, FloatDistribution):
        if dist.log:
            return math.exp(rng.uniform(math.log(dist.low), math.log(dist.high)))
        return rng.uniform(dist.low, dist.high)
    return rng.randint(dist.low, dist.high)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="output dir (replaced)")
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    a = ap.parse_args()
    t0 = time.time()
    res = make(a.out, a.trials, a.seed)
    res["make_s"] = time.time() - t0
    if a.json:
        print(json.dumps(res))
        return
    for k, v in res.items():
        print(f"{k:10s} {v:.2f}" if isinstance(v, float) else f"{k:10s} {v}")


if __name__ == "__main__":
    main()
