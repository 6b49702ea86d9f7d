"""TensorBoard records: the HParams experiment of a sweep and the runs of its trials."""

from __future__ import annotations

from tbxsweep.tblog._extras import (
    log_classification,
    log_graph,
    log_histograms,
    log_misclassified,
    log_samples,
)
from tbxsweep.tblog._hparams import (
    PARETO_TAG,
    STATE_CODES,
    HParamsStatus,
    experiment_summary,
    metric_columns,
    plain_value,
    session_end_summary,
    session_start_summary,
)
from tbxsweep.tblog._pareto import write_front_ranks
from tbxsweep.tblog._sweep import IMPORTANCE_MIN_TRIALS, SweepLogger
from tbxsweep.tblog._writer import TrialLogger, write_experiment

__all__ = [
    "IMPORTANCE_MIN_TRIALS",
    "PARETO_TAG",
    "STATE_CODES",
    "HParamsStatus",
    "SweepLogger",
    "TrialLogger",
    "experiment_summary",
    "log_classification",
    "log_graph",
    "log_histograms",
    "log_misclassified",
    "log_samples",
    "metric_columns",
    "plain_value",
    "session_end_summary",
    "session_start_summary",
    "write_experiment",
    "write_front_ranks",
]
