"""What a person sees while a sweep runs: a live panel on a terminal, plain lines elsewhere."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.text import Text

from tbxsweep.jobs import TrialOutcome, TrialState


def fmt_params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={_num(v)}" for k, v in params.items())


def _num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


class Progress:
    """Receives the scheduler's events and shows them.

    On a terminal a status line stays at the bottom (finished/total, running, pruned,
    failed, best so far); otherwise every event is one plain line, for logs and CI.
    """

    def __init__(self, metric: str, stream: TextIO | None = None, live: bool | None = None):
        self.metric = metric
        self.stream = stream or sys.stdout
        self.console = Console(file=self.stream, highlight=False, soft_wrap=True)
        self.live_mode = self.stream.isatty() if live is None else live
        self._live: Live | None = None
        self._counts: Any = None
        self._cache_dir: Any = None  # the sweep's cache/, once the plan names it

    def __enter__(self) -> Progress:
        if self.live_mode:
            self._live = Live(
                console=self.console,
                refresh_per_second=4,
                transient=True,
                get_renderable=self._status,  # redrawn on its own: a cache build shows
            )
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None

    def line(self, text: str) -> None:
        self.console.print(Text(text))

    def __call__(self, kind: str, info: dict[str, Any]) -> None:
        self._counts = info.get("counts", self._counts)
        handler = getattr(self, f"_on_{kind}", None)
        if handler is not None:
            handler(info)
        if self._live is not None:
            self._live.update(self._status())

    def _on_plan(self, info: dict[str, Any]) -> None:
        from tbxsweep.study import redact_url

        d = info["devices"]
        if info.get("dask"):
            where = f"{info['slots']} Dask worker slot(s) at {info['dask']}"
        elif d.gpus:
            where = (
                f"{len(d.devices)} workers on GPU(s) {', '.join(map(str, d.gpus))} "
                f"({len(d.devices) // len(d.gpus)} per GPU)"
            )
        else:
            where = f"{len(d.devices)} CPU worker(s), {d.threads_per_worker} thread(s) each"
        self.line(f"{where}; storage {redact_url(info['storage'])}; logs in {info['paths'].root}")
        self._cache_dir = info["paths"].cache_dir
        if info["task"].feature_cache:
            self.line(info["task"].feature_cache)

    def _on_enqueued(self, info: dict[str, Any]) -> None:
        queued, given = info["queued"], info["given"]
        ran = f" ({given - queued} in the study already)" if queued < given else ""
        self.line(f"study.enqueue: {queued} of {given} known configuration(s) run first{ran}")

    def _on_warning(self, info: dict[str, Any]) -> None:
        self.line(f"warning: {info['message']}")

    def _on_pretrain(self, info: dict[str, Any]) -> None:
        self.line(f"pretraining the base model once (cached at {info['path']})")

    def _on_started(self, info: dict[str, Any]) -> None:
        if not self.live_mode:
            self.line(f"trial {info['number']} started: {fmt_params(info['params'])}")

    def _on_finished(self, info: dict[str, Any]) -> None:
        out: TrialOutcome = info["outcome"]
        self._counts = c = info["counts"]
        if out.state is TrialState.COMPLETE:
            what = f"{self.metric}={out.value:.4f} (best epoch {out.best_epoch})"
        elif out.state is TrialState.PRUNED:
            what = f"pruned after {out.epochs_run} epoch(s)"
        elif out.state is TrialState.INFEASIBLE:
            what = str(out.error)
        else:
            what = f"failed: {out.error}"
        built = f" (built the feature cache in {out.cache_build_s:.1f} s)" * (out.cache_build_s > 0)
        self.line(
            f"trial {out.number} {out.state.label}: {what}, {out.duration_s:.1f} s on "
            f"{out.device}{built} | {self._summary(c)}"
        )

    def _on_forked(self, info: dict[str, Any]) -> None:
        self.line(
            f"forked: new study {info['name']!r} in {info['dir']}, seeded with {info['seeded']} "
            f"finished trial(s) of {info['from']!r}"
        )

    def _on_storage_retry(self, info: dict[str, Any]) -> None:
        self.line(
            f"warning: the study's storage is unreachable ({info['error']}); retry "
            f"{info['attempt']} to {info['what']} in {info['delay']} s"
        )

    def _on_signal(self, info: dict[str, Any]) -> None:
        self.line(info["message"])

    def _on_recovered(self, info: dict[str, Any]) -> None:
        self.line(
            f"trial {info['number']} was left running: {info['reason']}; recorded as failed "
            "(interrupted), its run moved to _aside/ and its parameters queued again"
        )

    def _on_requeued(self, info: dict[str, Any]) -> None:
        self.line(f"trial {info['number']} stopped by another trial's worker crash: queued again")

    def _on_taken_over(self, info: dict[str, Any]) -> None:
        self.line(
            f"trial {info['number']} was taken over by another orchestrator "
            f"({info['reason']}): stopped and dropped here"
        )

    def _on_tested(self, info: dict[str, Any]) -> None:
        self.line(
            f"trial {info['number']} on the held-out test split: "
            f"test_accuracy={info['test_accuracy']:.4f} test_loss={info['test_loss']:.4f}"
        )

    def _on_timed_out(self, info: dict[str, Any]) -> None:
        self.line(
            f"trial {info['number']} ran past task.trial_timeout_s={info['limit']:g}: stopping it"
        )

    def _on_timeout(self, info: dict[str, Any]) -> None:
        self.line(f"study.timeout of {info['seconds']:g} s reached: no new trials")

    def _on_too_many_failures(self, info: dict[str, Any]) -> None:
        self.line(f"{info['limit']} trials failed in a row: stopping (last error: {info['error']})")

    def _summary(self, c: Any) -> str:
        best = "" if c.best_value is None else f" | best {c.best_value:.4f} (trial {c.best_trial})"
        return (
            f"{c.finished}/{c.n_trials} finished, {c.running} running, {c.pruned} pruned, "
            f"{c.failed} failed{f', {c.infeasible} infeasible' if c.infeasible else ''}{best}"
        )

    def _status(self) -> Text:
        if self._counts is None:
            return Text("starting workers…")
        c = self._counts
        extra = f" · {fmt_params(c.best_params)}" if c.best_params else ""
        # a worker builds a feature cache in a hidden folder it renames when done
        if self._cache_dir is not None and any(self._cache_dir.glob(".features-*.tmp")):
            extra += " · building feature cache…"
        return Text(self._summary(c) + extra, style="bold")
