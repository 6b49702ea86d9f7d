"""The other tools' side of compare.py: each runs in its own process, started by compare.py.

    python benchmarks/_runners.py optuna|handglued|keras-tuner|ray|ray-reuse|optuna-synthetic \\
        --workdir DIR --configs N --epochs E [--workers W] [--storage sqlite|memory]

Each writes DIR/result.json: {"workers": W, "dispatch": {trial key: time.time()}, ...};
the training function appends its own timings to $TBXSWEEP_BENCH_TIMINGS (bench_task.py).
"dispatch" is when the tool handed the trial over, right after its sampler's ask:
  optuna       after study.ask()
  handglued    after study.ask(), as the generator hands the trial to joblib
  keras-tuner  Tuner.on_trial_begin (after the oracle created the trial)
  ray          a Tune Callback's on_trial_start, in the driver
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_task


def _enqueued_study(a: argparse.Namespace) -> tuple[Any, list[dict[str, Any]], dict[str, Any]]:
    """A TPE study (seed 0) with the workload's configurations enqueued, in their order:
    (study, configurations, distributions)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfgs = bench_task.configs(a.configs)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=0),
        storage=_storage(a),
    )
    for c in cfgs:
        study.enqueue_trial(c, skip_if_exists=False)
    dists = bench_task.distributions(cfgs)
    return study, cfgs, dists


def run_optuna(a: argparse.Namespace) -> dict[str, Any]:
    """A plain sequential ask/tell loop in this one process, the configurations enqueued."""
    study, cfgs, dists = _enqueued_study(a)
    dispatch: dict[str, float] = {}
    for _ in cfgs:
        trial = study.ask(dists)
        dispatch[str(trial.number)] = time.time()
        value = bench_task.fit_digits(trial.params, a.epochs, tool="optuna", trial=trial.number)
        study.tell(trial, value)
    return {"workers": 1, "dispatch": dispatch}


def run_handglued(a: argparse.Namespace) -> dict[str, Any]:
    """The loop a careful user writes by hand: Optuna ask/tell in this process (the
    configurations enqueued), `joblib.Parallel(backend="loky", return_as=
    "generator_unordered")` streaming the trials to `--workers` reused worker processes,
    tensorboardX scalars per epoch and `add_hparams` at the end (bench_task.handglued_trial).
    """
    from joblib import Parallel, delayed

    study, cfgs, dists = _enqueued_study(a)
    dispatch: dict[str, float] = {}
    logdir = str(Path(a.workdir) / "runs")

    def tasks() -> Any:
        for _ in cfgs:
            trial = study.ask(dists)
            dispatch[str(trial.number)] = time.time()
            yield delayed(bench_task.handglued_trial)(
                trial.number, dict(trial.params), a.epochs, logdir
            )

    parallel = Parallel(n_jobs=a.workers, backend="loky", return_as="generator_unordered")
    for number, value in parallel(tasks()):
        study.tell(number, value)
    return {"workers": a.workers, "dispatch": dispatch}


def run_keras_tuner(a: argparse.Namespace) -> dict[str, Any]:
    """Keras Tuner's GridSearch over one choice, the index into the fixed list: it runs
    exactly the listed configurations, in order (a grid over the three hyperparameters
    would run their cartesian product instead)."""
    import keras_tuner as kt

    cfgs = bench_task.configs(a.configs)
    dispatch: dict[str, float] = {}
    starts: dict[str, float] = {}

    class FineTune(kt.HyperModel):
        def build(self, hp: Any) -> Any:
            import keras

            c = cfgs[hp.Choice("config", list(range(len(cfgs))))]
            keras.utils.set_random_seed(bench_task.TRAIN_SEED)  # as fit_digits does
            return bench_task.build_model(
                bench_task.load_base(),
                float(c["learning_rate"]),
                int(c["finetune_depth"]),
                len(bench_task.DIGITS_FINETUNE),
            )

        def fit(self, hp: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
            import keras

            c = cfgs[hp.get("config")]
            clock = bench_task.EpochClock()
            kwargs["callbacks"] = [*kwargs.get("callbacks", []), clock.callback()]
            kwargs["verbose"] = 0
            try:
                return model.fit(*args, batch_size=int(c["batch_size"]), **kwargs)
            finally:
                trial_id = current[0]
                bench_task.record_timing(
                    "keras-tuner", trial_id, c, starts.get(trial_id, time.time()), clock
                )
                keras.backend.clear_session()

    current = [""]

    class Grid(kt.GridSearch):
        def on_trial_begin(self, trial: Any) -> None:
            dispatch[trial.trial_id] = time.time()
            current[0] = trial.trial_id
            super().on_trial_begin(trial)

        def _try_build(self, hp: Any) -> Any:
            # The trial's work starts with building its model (KT's run_trial does that).
            starts.setdefault(current[0], time.time())
            return super()._try_build(hp)

    tuner = Grid(
        FineTune(),
        objective=kt.Objective("val_accuracy", "max"),
        max_trials=len(cfgs),
        directory=str(Path(a.workdir) / "kt"),
        project_name="bench",
        overwrite=True,
    )
    x_tr, y_tr, x_val, y_val = bench_task.data()
    tuner.search(x_tr, y_tr, epochs=a.epochs, validation_data=(x_val, y_val), verbose=0)
    return {"workers": 1, "dispatch": dispatch}


def run_ray(a: argparse.Namespace, reuse_actors: bool) -> dict[str, Any]:
    """Ray Tune with its OptunaSearch (TPE, seed 0), the configurations passed as
    points_to_evaluate, `workers` trials at a time, one CPU each."""
    import optuna
    import ray
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    cfgs = bench_task.configs(a.configs)
    workers = min(a.workers, len(cfgs))
    dispatch: dict[str, float] = {}

    class DispatchClock(tune.Callback):
        def on_trial_start(self, iteration: int, trials: Any, trial: Any, **info: Any) -> None:
            dispatch[trial.trial_id] = time.time()

    epochs = a.epochs

    def trainable(config: dict[str, Any]) -> None:
        import bench_task as task  # on PYTHONPATH in Ray's workers

        trial_id = tune.get_context().get_trial_id()
        task.fit_digits(
            config,
            epochs,
            on_epoch=lambda step, logs: tune.report(
                {"val_accuracy": logs.get("val_accuracy", float("nan")), "epoch": step}
            ),
            tool="ray",
            trial=trial_id,
        )

    ray.init(
        num_cpus=workers,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
        runtime_env={"env_vars": {k: v for k, v in os.environ.items() if k.startswith("TBX")}},
    )
    try:
        searcher = OptunaSearch(
            space=bench_task.distributions(cfgs),
            metric="val_accuracy",
            mode="max",
            points_to_evaluate=[dict(c) for c in cfgs],
            sampler=optuna.samplers.TPESampler(seed=0),
        )
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                num_samples=len(cfgs),
                max_concurrent_trials=workers,
                reuse_actors=reuse_actors,
            ),
            run_config=tune.RunConfig(
                storage_path=str(Path(a.workdir).resolve() / "ray"),
                verbose=0,
                callbacks=[DispatchClock()],
            ),
        )
        tuner.fit()
    finally:
        ray.shutdown()
    return {"workers": workers, "dispatch": dispatch}


def run_optuna_synthetic(a: argparse.Namespace) -> dict[str, Any]:
    """The synthetic mode's plain loop: tests/fake_trials.py `train` (a fixed sleep) called
    from a sequential ask/tell loop with a minimal context."""
    import optuna
    from optuna.distributions import BaseDistribution, FloatDistribution

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import fake_trials

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=0),
        storage=_storage(a),
    )
    dists: dict[str, BaseDistribution] = {"x": FloatDistribution(0.0, 1.0)}
    trials = []
    for _ in range(a.configs):
        trial = study.ask(dists)
        dispatched = time.time()
        run_dir = Path(a.workdir) / f"trial-{trial.number:04d}"
        run_dir.mkdir(parents=True, exist_ok=True)
        ctx = _Ctx(trial.number, a.epochs, run_dir)
        started = time.time()
        value = fake_trials.train(dict(trial.params), ctx)
        ended = time.time()
        study.tell(trial, value)
        trials.append(
            {
                "dispatched_at": dispatched,
                "started_at": started,
                "ended_at": ended,
                "told_at": time.time(),
                "worker_pid": os.getpid(),
            }
        )
    return {"workers": 1, "trials": trials}


class _Ctx:
    """What fake_trials.train uses of tbxsweep's TrialContext."""

    device = "cpu"

    def __init__(self, number: int, epochs: int, run_dir: Path) -> None:
        self.number, self.epochs, self.run_dir = number, epochs, run_dir

    def report(self, step: int, metrics: dict[str, float]) -> None:
        pass  # no pruner, as in the tbxsweep run (which then reports nothing to storage)


def _storage(a: argparse.Namespace) -> str | None:
    if a.storage == "memory":
        return None
    return f"sqlite:///{(Path(a.workdir) / 'optuna.db').resolve()}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "tool",
        choices=["optuna", "handglued", "keras-tuner", "ray", "ray-reuse", "optuna-synthetic"],
    )
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--configs", type=int, required=True)
    ap.add_argument("--epochs", type=int, required=True)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--storage", choices=["sqlite", "memory"], default="sqlite")
    a = ap.parse_args()
    Path(a.workdir).mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if a.tool == "optuna":
        res = run_optuna(a)
    elif a.tool == "handglued":
        res = run_handglued(a)
    elif a.tool == "keras-tuner":
        res = run_keras_tuner(a)
    elif a.tool in ("ray", "ray-reuse"):
        res = run_ray(a, reuse_actors=a.tool == "ray-reuse")
    else:
        res = run_optuna_synthetic(a)
    res["runner_s"] = time.time() - t0
    (Path(a.workdir) / "result.json").write_text(json.dumps(res))


if __name__ == "__main__":
    main()
