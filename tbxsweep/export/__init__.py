"""The leaderboard: the study's trials ranked, as a pandas table and a CSV file; the models
kept and `tbxsweep best`; which trials the held-out test split evaluates and its results;
the report: the study's plots and top rows as one self-contained HTML page."""

from __future__ import annotations

from tbxsweep.export._best import KeptModel, ModelKeeper, find_model, kept_models, save_copy
from tbxsweep.export._heldout import best_trials, held_out_runs, record_test_results
from tbxsweep.export._leaderboard import (
    FIXED_COLUMNS,
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
    "FIXED_COLUMNS",
    "TEST_COLUMNS",
    "KeptModel",
    "ModelKeeper",
    "best_trials",
    "find_model",
    "front_ranks",
    "held_out_runs",
    "infeasible",
    "kept_models",
    "leaderboard_columns",
    "leaderboard_frame",
    "pareto_ranks",
    "ranked_complete",
    "record_test_results",
    "report_html",
    "save_copy",
    "test_results",
    "write_csv_atomic",
    "write_report",
]
