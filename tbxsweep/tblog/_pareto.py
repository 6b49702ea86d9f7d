"""A multi-objective study's Pareto front ranks, written into its trials' runs."""

from __future__ import annotations

from pathlib import Path

from tbxsweep.tblog._hparams import PARETO_TAG
from tbxsweep.tblog._writer import TrialLogger


def write_front_ranks(root: str | Path, ranks: dict[str, int], step: int) -> None:
    """Log `pareto` = the front rank in each run (`ranks`: run name under `root` -> rank).

    The HParams tab shows a tag's value at the highest step: `step` should grow with the
    study (its finished trials), so that a resumed sweep's ranks replace the earlier ones.
    Runs that are gone (moved aside) are skipped.
    """
    for run, rank in sorted(ranks.items()):
        run_dir = Path(root) / run
        if not run_dir.is_dir():
            continue
        log = TrialLogger(run_dir, filename_suffix=".pareto")
        log.scalars(step, {PARETO_TAG: rank})
        log.close()
