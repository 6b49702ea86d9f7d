"""The leaderboard: the study's trials ranked, as a pandas table and a CSV file."""

from __future__ import annotations

from tbxsweep.export._leaderboard import (
    FIXED_COLUMNS,
    leaderboard_columns,
    leaderboard_frame,
    write_csv_atomic,
)

__all__ = ["FIXED_COLUMNS", "leaderboard_columns", "leaderboard_frame", "write_csv_atomic"]
