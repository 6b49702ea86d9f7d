"""The shareable report: one self-contained HTML page of a sweep, readable without a server.

Optuna's own figures (optimisation history, parallel coordinates, parameter importances),
the validation curves the trials reported (intermediate values), grouped by fine-tune
depth, and the leaderboard's top rows. plotly.js is embedded once in the page, so it opens
from a file, offline; each figure travels as JSON in a `<script type="application/json">`
block that a few lines of script hand to `Plotly.newPlot` (and that tests can read back).
"""

from __future__ import annotations

import html
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tbxsweep.export._leaderboard import leaderboard_frame, test_results

if TYPE_CHECKING:
    import optuna
    import pandas as pd
    import plotly.graph_objects as go
    from optuna.trial import FrozenTrial

    from tbxsweep.study import SweepInfo

GROUP_PARAM = "finetune_depth"  # the curves are grouped by it when the space searches it
# Columns the terminal table leaves out too: a pid means nothing to a reader elsewhere, and
# an error message is a paragraph (it stays in the CSV).
HIDDEN_COLUMNS = ("error", "worker_pid")
DEFAULT_TOP = 10


def write_report(
    study: optuna.Study,
    info: SweepInfo,
    path: str | Path,
    *,
    aside: set[int] | None = None,
    top: int = DEFAULT_TOP,
) -> Path:
    """Write the report of `study` to `path` atomically (readers never see half a page);
    returns the path. `aside`: as for `leaderboard_frame`."""
    path = Path(path)
    _write_text_atomic(path, report_html(study, info, aside=aside, top=top))
    return path


def report_html(
    study: optuna.Study, info: SweepInfo, *, aside: set[int] | None = None, top: int = DEFAULT_TOP
) -> str:
    """The whole page for an Optuna study whose sweep is described by `info`."""
    trials = study.get_trials(deepcopy=False)
    attrs = dict(study.user_attrs)
    params = list(info.params)
    board = leaderboard_frame(trials, params, info.direction, aside, tests=test_results(attrs))
    parts = [
        _section("summary", f"Sweep {info.study_name}", _summary(trials, info, board)),
        _figure_section("history", "Optimisation history", _history(study, trials, info)),
        _figure_section("parallel", "Parallel coordinates", _parallel(study, trials, info)),
        _figure_section("importances", "Parameter importances", _importances(study, trials)),
        _figure_section("curves", _curves_title(info), _curves(trials, info)),
        _section("leaderboard", f"Leaderboard (top {top})", _table(board.head(top))),
    ]
    return _page(f"tbxsweep report: {info.study_name}", "\n".join(parts))


# -- figures: each returns a plotly Figure, or the sentence that says why there is none -----


def _history(study: optuna.Study, trials: list[FrozenTrial], info: SweepInfo) -> go.Figure | str:
    from optuna.visualization import plot_optimization_history

    if not _complete(trials):
        return "No completed trial yet."
    return plot_optimization_history(study, **_target(study, info))


def _parallel(study: optuna.Study, trials: list[FrozenTrial], info: SweepInfo) -> go.Figure | str:
    from optuna.visualization import plot_parallel_coordinate

    if not _complete(trials):
        return "No completed trial yet."
    return plot_parallel_coordinate(study, params=list(info.params), **_target(study, info))


def _importances(study: optuna.Study, trials: list[FrozenTrial]) -> go.Figure | str:
    from optuna.visualization import plot_param_importances

    from tbxsweep.tblog import IMPORTANCE_MIN_TRIALS

    n = len(_complete(trials))
    # The same threshold as the TensorBoard sweep run, so the two never disagree on
    # whether a study has importances (fANOVA on 2-3 trials is noise anyway).
    if n < IMPORTANCE_MIN_TRIALS:
        return (
            f"Parameter importances need at least {IMPORTANCE_MIN_TRIALS} completed trials; "
            f"this study has {n}."
        )
    try:
        return plot_param_importances(study, **_target(study, None))
    except (ValueError, RuntimeError) as exc:  # e.g. every trial has the same parameters
        return f"Optuna could not compute parameter importances: {exc}"


def _curves(trials: list[FrozenTrial], info: SweepInfo) -> go.Figure | str:
    """One line per trial (its reported values by epoch), one colour and legend group per
    value of `finetune_depth`; pruned trials dotted, where they stopped."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative

    shown = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED") and t.intermediate_values]
    if not shown:
        return "No trial reported per-epoch values to the study."
    grouped = GROUP_PARAM in info.params
    groups = [None]
    if grouped:
        groups = sorted({t.params.get(GROUP_PARAM) for t in shown}, key=_sort_key)
    colors = qualitative.Plotly
    fig = go.Figure()
    for gi, group in enumerate(groups):
        label = f"{GROUP_PARAM}={group}" if grouped else "all trials"
        members = [t for t in shown if not grouped or t.params.get(GROUP_PARAM) == group]
        for i, t in enumerate(sorted(members, key=lambda t: t.number)):
            steps = sorted(t.intermediate_values)
            pruned = t.state.name == "PRUNED"
            fig.add_trace(
                go.Scatter(
                    x=steps,
                    y=[t.intermediate_values[s] for s in steps],
                    mode="lines+markers",
                    name=f"trial {t.number}" + (" (pruned)" if pruned else ""),
                    legendgroup=label,
                    legendgrouptitle_text=label if i == 0 else None,
                    line={"color": colors[gi % len(colors)], "dash": "dot" if pruned else "solid"},
                    meta={"trial": t.number, "group": group, "state": t.state.name},
                )
            )
    last = max(max(t.intermediate_values) for t in shown)
    fig.update_layout(
        # whole epochs only, about ten ticks whatever the length of the runs
        xaxis={"title": "epoch", "tick0": 0, "dtick": max(1, round(last / 10))},
        yaxis_title=str(info.metric),
        legend={"groupclick": "toggleitem"},
    )
    return fig


def _curves_title(info: SweepInfo) -> str:
    if GROUP_PARAM in info.params:
        return f"Validation curves ({info.metric} per epoch) by {GROUP_PARAM}"
    return f"Validation curves ({info.metric} per epoch)"


def _target(study: optuna.Study, info: SweepInfo | None) -> dict[str, Any]:
    """Plot arguments for the first objective of a multi-objective study (Optuna asks
    which one), and the metric's name on the axis."""
    kwargs: dict[str, Any] = {}
    if len(study.directions) > 1:
        kwargs["target"] = lambda t: t.values[0]
    if info is not None:
        kwargs["target_name"] = str(info.metric)
    return kwargs


def _complete(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if t.state.name == "COMPLETE"]


def _sort_key(v: Any) -> tuple[int, Any]:
    return (0, v) if isinstance(v, (int, float)) else (1, str(v))


# -- text and tables ------------------------------------------------------------------------


def _summary(trials: list[FrozenTrial], info: SweepInfo, board: pd.DataFrame) -> str:
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    states = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no trials"
    lines = [
        f"{info.direction} <b>{html.escape(str(info.metric))}</b> over "
        f"{', '.join(html.escape(p) for p in info.params)}: {len(trials)} trials ({states}).",
    ]
    best = board[board["state"] == "complete"].head(1)
    if len(best):
        row = best.iloc[0]
        params = ", ".join(f"{p}={_cell(row[p])}" for p in info.params)
        lines.append(
            f"Best: trial {int(row['trial'])}, {html.escape(str(info.metric))}="
            f"{_cell(row['value'])} ({html.escape(params)})."
        )
    lines.append(f"Written {time.strftime('%Y-%m-%d %H:%M:%S %Z')} by tbxsweep {_version()}.")
    return "".join(f"<p>{line}</p>" for line in lines)


def _table(df: pd.DataFrame) -> str:
    if df.empty:
        return "<p>No trials yet.</p>"
    cols = [c for c in df.columns if c not in HIDDEN_COLUMNS]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(row[c]))}</td>" for c in cols) + "</tr>"
        for _, row in df.iterrows()
    )
    table = f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody>"
    return f'<div class="scroll"><table class="leaderboard">{table}</table></div>'


def _cell(v: Any) -> str:
    """A table cell as the terminal leaderboard shows it: 4 significant digits, blank NA."""
    import pandas as pd

    if v is None:
        return ""
    try:
        if pd.isna(v):
            return ""
    except (TypeError, ValueError):
        pass
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# -- the page -------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1600px; color: #222; }
.scroll { overflow-x: auto; }
section { margin-bottom: 2.5em; }
.figure { width: 100%; height: 480px; }
.note { color: #666; font-style: italic; }
table.leaderboard { border-collapse: collapse; font-size: 0.9em; }
table.leaderboard th, table.leaderboard td { padding: 0.25em 0.7em; text-align: right; }
table.leaderboard th { border-bottom: 2px solid #444; }
table.leaderboard tr:nth-child(even) { background: #f3f3f3; }
"""
# Every figure's JSON goes to Plotly once the page (and plotly.js above it) has loaded.
_RENDER = """
document.querySelectorAll('script[type="application/json"][data-figure]').forEach(
  function (el) {
    var fig = JSON.parse(el.textContent);
    Plotly.newPlot(el.dataset.figure, fig.data, fig.layout, {displaylogo: false, responsive: true});
  });
"""


def _section(key: str, title: str, body: str) -> str:
    return f'<section id="{key}"><h2>{html.escape(title)}</h2>\n{body}\n</section>'


def _figure_section(key: str, title: str, fig: go.Figure | str) -> str:
    if isinstance(fig, str):
        return _section(key, title, f'<p class="note">{html.escape(fig)}</p>')
    div = f"fig-{key}"
    fig.update_layout(title={"text": ""}, margin={"t": 30})  # the section's heading says it
    # `</` inside a <script> block would end it early (a parameter named '</script>'):
    # `<\/` is the same JSON string.
    data = fig.to_json().replace("</", "<\\/")
    body = (
        f'<div class="figure" id="{div}"></div>\n'
        f'<script type="application/json" data-figure="{div}">{data}</script>'
    )
    return _section(key, title, body)


def _page(title: str, body: str) -> str:
    from plotly.offline import get_plotlyjs

    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>\n'
        f"<style>{_STYLE}</style>\n"
        f"<script>{get_plotlyjs()}</script>\n"
        f"</head><body>\n<h1>{html.escape(title)}</h1>\n{body}\n"
        f"<script>{_RENDER}</script>\n</body></html>\n"
    )


def _write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _version() -> str:
    from tbxsweep import __version__

    return __version__
