"""The sweep-level run: the best value so far against trial number, parameter importances."""

from __future__ import annotations

import logging
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from tbxsweep.tblog._extras import importances_text
from tbxsweep.tblog._writer import TrialLogger

IMPORTANCE_MIN_TRIALS = 4
IMPORTANCE_EVERY_S = 60.0


class SweepLogger:
    """Writes the `sweep` run. It carries no hparams session, so it is not a table row."""

    def __init__(self, run_dir: str | Path, metric: str) -> None:
        self._logger: TrialLogger | None = None
        self.run_dir = Path(run_dir)
        self.metric = metric
        self._last_importance_count = 0
        self._last_importance_at = time.monotonic()
        self._prefetch: threading.Thread | None = None
        self.cache_build_s = 0.0  # the feature caches' build seconds, summed over trials

    def prefetch(self) -> None:
        """Import what the importances need (Optuna's fANOVA: scikit-learn, SciPy) in the
        background, once. Call it after the first dispatch: that import is 1-3 s, which
        would otherwise hold up the start of the sweep or the end of it, the workers idle.
        """
        if self._prefetch is None:
            self._prefetch = threading.Thread(
                target=_import_importance, name="tbxsweep-prefetch", daemon=True
            )
            self._prefetch.start()

    def trial_finished(
        self,
        study: Any,
        number: int,
        value: float | None,
        best: float | None,
        n_complete: int,
        cache_build_s: float = 0.0,
    ) -> None:
        """Log one finished trial: its value, the best so far and, once a trial has built
        a feature cache, the seconds spent building them so far (`sweep/cache_build_s`)."""
        log = self._open()
        values = {}
        self.cache_build_s += cache_build_s
        if self.cache_build_s > 0:
            values["sweep/cache_build_s"] = self.cache_build_s
        if value is not None:
            values[f"sweep/{self.metric}"] = value
        if best is not None:
            values[f"sweep/best_{self.metric}"] = best
        if values:
            log.scalars(number, values)
        # Importances cost a fANOVA fit (and importing scikit-learn): not after every
        # trial, so that the next trial is not kept waiting; always once at the end.
        if time.monotonic() - self._last_importance_at >= IMPORTANCE_EVERY_S:
            self.importances(study, n_complete)

    def importances(self, study: Any, n_complete: int) -> None:
        """Log the parameter importances once there are enough completed trials."""
        if n_complete < IMPORTANCE_MIN_TRIALS or n_complete == self._last_importance_count:
            return
        self._last_importance_count = n_complete
        self._last_importance_at = time.monotonic()
        imp = _importances(study)
        if imp:
            log = self._open()
            log.scalars(n_complete, {f"importance/{k}": v for k, v in imp.items()})
            log.text("sweep/importances", importances_text(imp), step=n_complete)

    def close(self) -> None:
        if self._logger is not None:
            self._logger.close()
            self._logger = None

    def _open(self) -> TrialLogger:
        if self._logger is None:
            self._logger = TrialLogger(self.run_dir)
        return self._logger


def _import_importance() -> None:
    try:
        import optuna.importance  # noqa: F401
    except Exception as exc:  # computing the importances reports it, if it matters
        logging.getLogger("tbxsweep").debug("importing optuna.importance failed: %s", exc)


def _importances(study: Any) -> dict[str, float]:
    import optuna

    try:
        # With several objectives, the importances for the first (the one the progress
        # line's "best" and the sweep run's best-so-far curve follow).
        # (PED-ANOVA, Optuna's default, takes a target as one to minimise.)
        sign = -1.0 if study.directions[0].name == "MAXIMIZE" else 1.0
        target = (lambda t: sign * t.values[0]) if len(study.directions) > 1 else None
        with warnings.catch_warnings():  # its "low target values" notice: we negated it
            warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator")
            imp = optuna.importance.get_param_importances(study, target=target)
        return {k: float(v) for k, v in imp.items()}
    except Exception as exc:
        logging.getLogger("tbxsweep").debug("importances failed: %s", exc)
        return {}
