"""The leaderboard: the study's trials ranked, as a pandas table and a CSV file."""

from __future__ import annotations

from tbxsweep.export._heldout import best_trials, evaluate_best_trials
from tbxsweep.export._leaderboard import (
    ATTR,
    FIXED_COLUMNS,
    TEST_ATTR,
    TEST_COLUMNS,
    leaderboard_columns,
    leaderboard_frame,
    test_results,
    write_csv_atomic,
)

__all__ = [
    "ATTR",
    "FIXED_COLUMNS",
    "TEST_ATTR",
    "TEST_COLUMNS",
    "best_trials",
    "evaluate_best_trials",
    "leaderboard_columns",
    "leaderboard_frame",
    "test_results",
    "write_csv_atomic",
]
