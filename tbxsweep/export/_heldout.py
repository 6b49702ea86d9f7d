"""The end of a sweep: which trials the held-out test split evaluates, and its results
recorded.

Trials select and prune on validation data only; the test split is read once, for the
`study.test_top_k` best completed trials, from each one's best-epoch weights, in a worker
(`schedule` submits that job). The results are kept in the study (so `tbxsweep leaderboard`
shows them again), written into the trials' TensorBoard runs (the HParams tab's test
columns) by the worker, and into leaderboard.csv (test_accuracy, test_loss; NaN for the
other trials) here.
"""

from __future__ import annotations

from typing import Any

from tbxsweep.export._best import kept_models, model_run
from tbxsweep.export._leaderboard import (
    leaderboard_frame,
    ranked_complete,
    test_results,
    write_csv_atomic,
)
from tbxsweep.paths import SweepPaths
from tbxsweep.spec import Spec
from tbxsweep.study import TEST_ATTR, aside_numbers


def best_trials(trials: list[Any], direction: str, k: int) -> list[Any]:
    """The `k` best completed, feasible trials, best first (ties: the earlier trial); with
    several objectives, by Pareto front rank, then the first objective."""
    return ranked_complete(trials, direction)[:k]


def held_out_runs(
    spec: Spec, paths: SweepPaths, trials: list[Any], known: dict[int, Any]
) -> list[tuple[int, str]]:
    """(trial number, run directory) of the best trials to evaluate, best first: those not
    in `known` (evaluated by an earlier `start`; a trial is evaluated once).

    The run is the one holding the trial's best-epoch weights: with `study.repeats`, its
    best repeat's (`trial-0003/r1`), as for its kept model (`model_run`).
    """
    direction = spec.study.direction
    return [
        (t.number, str(paths.root / model_run(t, direction)))
        for t in best_trials(trials, direction, spec.test_top_k)
        if t.number not in known
    ]


def record_test_results(
    spec: Spec, study: Any, paths: SweepPaths, results: dict[int, dict[str, float]]
) -> dict[int, dict[str, float]]:
    """Keep `results` with those recorded before in the study and rewrite leaderboard.csv
    with its test columns; returns every trial's results."""
    merged = {**(test_results(study.user_attrs) or {}), **results}
    study.set_user_attr(TEST_ATTR, {str(k): v for k, v in merged.items()})
    everything = study.get_trials(deepcopy=False)
    df = leaderboard_frame(
        everything,
        list(spec.search_space),
        spec.study.direction,
        aside_numbers(study.user_attrs),
        tests=merged,
        models=kept_models(paths, everything, spec.study.direction),
    )
    write_csv_atomic(df, paths.leaderboard_csv)
    return merged
