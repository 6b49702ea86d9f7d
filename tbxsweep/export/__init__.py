"""The leaderboard: the study's trials ranked, as a pandas table and a CSV file; the report:
the study's plots and top rows as one self-contained HTML page."""

from __future__ import annotations

from tbxsweep.export._best import KeptModel, ModelKeeper, find_model, kept_models, save_copy
from tbxsweep.export._heldout import best_trials, evaluate_best_trials
from tbxsweep.export._leaderboard import (
    ATTR,
    FIXED_COLUMNS,
    TEST_ATTR,
    TEST_COLUMNS,
    front_ranks,
    infeasible,
    leaderboard_columns,
    leaderboard_frame,
    pareto_ranks,
    ranked_complete,
    test_results,
    write_csv_atomic,
)
from tbxsweep.export._report import report_html, write_report

__all__ = [
    "ATTR",
    "FIXED_COLUMNS",
    "TEST_ATTR",
    "TEST_COLUMNS",
    "KeptModel",
    "ModelKeeper",
    "best_trials",
    "evaluate_best_trials",
    "find_model",
    "front_ranks",
    "infeasible",
    "kept_models",
    "leaderboard_columns",
    "leaderboard_frame",
    "pareto_ranks",
    "ranked_complete",
    "report_html",
    "save_copy",
    "test_results",
    "write_csv_atomic",
    "write_report",
]
