"""The end of a sweep: its best trials evaluated once on the held-out test split.

Trials select and prune on validation data only; the test split is read once, here, for
the `study.test_top_k` best completed trials, from each one's best-epoch weights, in a
worker. The results are kept in the study (so `tbxsweep leaderboard` shows them again),
written into the trials' TensorBoard runs (the HParams tab's test columns) and into
leaderboard.csv (test_accuracy, test_loss; NaN for the other trials).
"""

from __future__ import annotations

from typing import Any

from tbxsweep.export._best import kept_models
from tbxsweep.export._leaderboard import (
    TEST_ATTR,
    leaderboard_frame,
    ranked_complete,
    test_results,
    write_csv_atomic,
)


def best_trials(trials: list[Any], direction: str, k: int) -> list[Any]:
    """The `k` best completed, feasible trials, best first (ties: the earlier trial); with
    several objectives, by Pareto front rank, then the first objective."""
    return ranked_complete(trials, direction)[:k]


def evaluate_best_trials(spec: Any, study: Any, sched: Any, aside: set[int]) -> None:
    """Evaluate the best trials on the test split in a worker and record the results.

    Also asks that worker to show the fine-tuning data in the `sweep` run if preparation
    did not (tasks without a pretrained base). Trials evaluated by an earlier `start` of
    the same study keep their results; a trial is evaluated once.

    Args:
        spec: the sweep's spec.
        study: the Optuna study.
        sched: the scheduler (`submit`, `paths`, `slots`, `base_model_path`, `on_event`).
        aside: trials whose runs were moved aside (the leaderboard's empty `run`).
    """
    from tbxsweep.trial import HeldOutJob
    from tbxsweep.worker import evaluate_test

    if spec.task.train is not None:
        return
    trials = study.get_trials(deepcopy=False)
    known = test_results(study.user_attrs) or {}
    chosen = [
        t
        for t in best_trials(trials, spec.study.direction, spec.test_top_k)
        if t.number not in known
    ]
    paths = sched.paths
    job = HeldOutJob(
        spec=spec,
        base_model_path=sched.base_model_path,
        slots=sched.slots,
        trials=tuple((t.number, str(paths.trial_dir(t.number))) for t in chosen),
        sweep_run_dir=str(paths.sweep_run_dir),
    )
    results = sched.submit(evaluate_test, job).result()
    if not spec.test_top_k:
        return
    merged = {**known, **results}
    study.set_user_attr(TEST_ATTR, {str(k): v for k, v in merged.items()})
    for number, r in sorted(results.items()):
        sched.on_event("tested", {"number": number, **r})
    everything = study.get_trials(deepcopy=False)
    df = leaderboard_frame(
        everything,
        list(spec.search_space),
        spec.study.direction,
        aside,
        tests=merged,
        models=kept_models(paths, everything, spec.study.direction),
    )
    write_csv_atomic(df, paths.leaderboard_csv)
