"""The sweep's last step: its best trials evaluated once on the held-out test split, in a
worker (which trials, and recording the results, are `export`'s)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tbxsweep.paths import BEST_WEIGHTS

if TYPE_CHECKING:
    from tbxsweep.schedule._loop import Scheduler


def evaluate_best_trials(sched: Scheduler) -> dict[int, dict[str, float]]:
    """Evaluate the best trials on the test split in a worker and record the results;
    returns the new ones, by trial number (event "tested" for each).

    Also asks that worker to show the fine-tuning data in the `sweep` run if preparation
    did not (tasks without a pretrained base). Trials evaluated by an earlier `start` of
    the same study keep their results; a trial is evaluated once. A `task.train` function
    owns its data: there is no test split to read.
    """
    from tbxsweep.export import held_out_runs, record_test_results, test_results
    from tbxsweep.trial import HeldOutJob, has_test_data
    from tbxsweep.worker import evaluate_test

    spec, study, paths = sched.spec, sched.study, sched.paths
    if spec.task.train is not None:
        return {}
    known = test_results(study.user_attrs) or {}
    runs = held_out_runs(spec, paths, study.get_trials(deepcopy=False), known)
    if runs and has_test_data(spec.task):
        for number, run in runs:
            if not (Path(run) / BEST_WEIGHTS).is_file():
                sched.on_event(
                    "warning",
                    {
                        "message": f"trial {number} is not evaluated on the test split: "
                        f"{run} has no {BEST_WEIGHTS} (a trial seeded from a forked study, "
                        "or one that ran while study.test_top_k was smaller)"
                    },
                )
    job = HeldOutJob(
        spec=spec,
        base_model_path=sched.base_model_path,
        slots=sched.slots,
        trials=tuple(runs),
        sweep_run_dir=str(paths.sweep_run_dir),
    )
    results: dict[int, dict[str, float]] = sched.submit(evaluate_test, job).result()
    if not spec.test_top_k:
        return {}
    record_test_results(spec, study, paths, results)
    for number, r in sorted(results.items()):
        sched.on_event("tested", {"number": number, **r})
    return results
