"""One function per CLI command: the glue between the command line and the stages."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from tbxsweep.cli.progress import Progress, fmt_params

if TYPE_CHECKING:
    from tbxsweep.schedule import SweepCounts, Workers
    from tbxsweep.spec import Spec


def start_command(
    spec_path: str, overrides: tuple[str, ...], fork: bool = False, join: bool = False
) -> None:
    from tbxsweep.schedule import release_workers, start_workers
    from tbxsweep.spec import load_spec

    spec = load_spec(spec_path, overrides)
    # The workers first: they import TensorFlow (seconds) while the checks, the study and
    # the TensorBoard experiment are done here (a mistake found there stops them again).
    workers = start_workers(spec, fork=fork)
    try:
        spec, counts, progress = _run(spec_path, spec, workers, fork, join)
    finally:
        release_workers()  # this process ends: its idle workers need not linger
        workers.close()
        _skip_last_collection()
    out = counts.output_dir
    infeasible = f", {counts.infeasible} infeasible" if counts.infeasible else ""
    progress.line(
        f"done: {counts.finished}/{counts.n_trials} finished ({counts.complete} complete, "
        f"{counts.pruned} pruned{infeasible}), {counts.failed} failed"
    )
    if spec.study.multi_objective:
        for line in _front_lines(spec, counts):
            progress.line(line)
    elif counts.best_trial is not None:
        progress.line(
            f"best: trial {counts.best_trial} {spec.study.metric}={counts.best_value:.4f} "
            f"{fmt_params(counts.best_params)}"
        )
    progress.line(f"leaderboard: {out / 'leaderboard.csv'}   (tbxsweep leaderboard {out})")
    progress.line(f"TensorBoard: tensorboard --logdir {out}   then open the HPARAMS tab")


def _skip_last_collection() -> None:
    """At exit, freeze what the process holds (gc.freeze) so that Python's last garbage
    collection skips it: walking every object of Optuna, SQLAlchemy, pandas and
    scikit-learn took 0.5-0.6 s, the command waiting after its last line. The sweep has
    closed its storage and writers by then; the OS frees the rest."""
    import atexit
    import gc

    atexit.unregister(gc.freeze)  # once, however many sweeps ran in this process
    atexit.register(gc.freeze)


def _front_lines(spec: Spec, counts: SweepCounts) -> list[str]:
    """A multi-objective sweep's result: its Pareto front, one line per trial."""
    goals = spec.study.goals
    head = ", ".join(f"{g.direction} {g.name}" for g in goals)
    lines = [f"pareto front: {len(counts.front)} trial(s) ({head})"]
    for number, values, params in counts.front:
        shown = " ".join(f"{g.name}={v:.4g}" for g, v in zip(goals, values, strict=True))
        lines.append(f"  trial {number}: {shown} {fmt_params(params)}")
    return lines


def _run(
    spec_path: str, spec: Spec, workers: Workers, fork: bool, join: bool
) -> tuple[Spec, SweepCounts, Progress]:
    """Check the spec and run the sweep on `workers`, showing its progress."""
    from tbxsweep.schedule import StopRequest, check_spec, handle_signals, run_sweep

    spec = check_spec(spec, spec_path)
    progress = Progress(spec.study.metric)
    progress.line(
        f"tbxsweep: study {spec.study.name!r}, {spec.study.n_trials} trials, "
        f"{spec.study.direction} {spec.study.metric}"
    )
    stop = StopRequest()

    def said(count: int) -> None:
        progress(
            "signal",
            {
                "message": "stopping: no new trials; waiting for running trials "
                f"(up to {spec.resources.grace_s:g} s); press Ctrl-C again to stop now"
                if count == 1
                else "stopping now"
            },
        )

    with progress, handle_signals(stop, said):
        counts = run_sweep(
            spec,
            on_event=progress,
            where=spec_path,
            stop=stop,
            fork=fork,
            join=join,
            workers=workers,
            release=True,
        )
    return spec, counts, progress


def leaderboard_command(output_dir: str, csv_path: str | None, top: int | None) -> None:
    from tbxsweep.export import kept_models, leaderboard_frame, test_results, write_csv_atomic
    from tbxsweep.study import aside_numbers, read_study_trials, read_sweep_info

    info, paths = read_sweep_info(output_dir)
    trials, study_attrs = read_study_trials(info.storage_url(paths), info.study_name)
    df = leaderboard_frame(
        trials,
        list(info.params),
        info.direction,
        aside_numbers(study_attrs),
        tests=test_results(study_attrs),
        models=kept_models(paths, trials, info.direction),
    )
    if csv_path:
        write_csv_atomic(df, Path(csv_path))
        click.echo(f"wrote {len(df)} trials to {csv_path}")
        return
    shown = df if top is None else df.head(top)
    _print_table(shown, info.metric)


def best_command(output_dir: str, number: int | None, save: str | None, force: bool) -> None:
    from tbxsweep.export import find_model, save_copy

    kept = find_model(output_dir, number)
    # before anything is printed: a refused --save shows only its one-line error
    saved = save_copy(kept.path, save, force=force) if save else None
    click.echo(
        f"trial {kept.number}: {kept.metric}={kept.value:.4f}, "
        f"rank {kept.rank} of {kept.n_complete} completed"
    )
    click.echo(f"params: {fmt_params(kept.params)}")
    click.echo(f"model: {kept.path}")
    if saved is not None:
        click.echo(f"saved: {saved}")


def _print_table(df: object, metric: str) -> None:
    import sys

    import pandas as pd
    from rich.console import Console
    from rich.table import Table

    assert isinstance(df, pd.DataFrame)
    cols = [c for c in df.columns if c not in ("error", "worker_pid")]
    if not sys.stdout.isatty():
        click.echo(df[cols].to_string(index=False, na_rep="", float_format=lambda v: f"{v:.4g}"))
        return
    table = Table(title=f"leaderboard ({metric})", show_lines=False)
    for c in cols:
        table.add_column(
            c, justify="right" if c not in ("state", "device", "run") else "left", no_wrap=True
        )
    for _, row in df.iterrows():
        table.add_row(*[_cell(row[c]) for c in cols])
    Console(highlight=False).print(table)


def _cell(v: object) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return ""
    try:
        import pandas as pd

        if pd.isna(v):
            return ""
    except (TypeError, ValueError):
        pass
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def board_command(output_dir: str, host: str, port: int | None) -> None:
    from tbxsweep.cli.board import start_board
    from tbxsweep.study import read_sweep_info

    read_sweep_info(output_dir)  # a clear error for a directory that is not a sweep
    board = start_board(output_dir, host=host, port=port)
    click.echo(f"TensorBoard on {output_dir}: {board.hparams_url}  (Ctrl-C to stop)")
    _stop_on_termination()
    try:
        board.process.wait()
    finally:
        board.stop()


def dashboard_command(output_dir: str, host: str, port: int | None) -> None:
    from tbxsweep.cli.dashboard import start_dashboard
    from tbxsweep.study import read_sweep_info

    info, paths = read_sweep_info(output_dir)
    dash = start_dashboard(info.storage_url(paths), info.study_name, host=host, port=port)
    click.echo(f"optuna-dashboard on {output_dir}: {dash.study_url}  (Ctrl-C to stop)")
    _stop_on_termination()
    try:
        dash.process.wait()
    finally:
        dash.stop()


def report_command(output_dir: str, out: str | None, top: int) -> None:
    from tbxsweep.export import write_report
    from tbxsweep.study import (
        aside_numbers,
        load_existing_study,
        read_study_trials,
        read_sweep_info,
    )

    info, paths = read_sweep_info(output_dir)
    url = info.storage_url(paths)
    read_study_trials(url, info.study_name)  # the one-line error, where a SQLite file is gone
    study = load_existing_study(url, info.study_name)
    aside = aside_numbers(dict(study.user_attrs))
    path = write_report(study, info, out or paths.report_html, aside=aside, top=top)
    click.echo(f"wrote {path}")


def check_command(output_dir: str) -> int:
    from tbxsweep.cli.board import start_board
    from tbxsweep.cli.check import compare
    from tbxsweep.errors import EXIT_MISMATCH
    from tbxsweep.study import read_sweep_info

    read_sweep_info(output_dir)
    with start_board(output_dir) as board:
        problems, df, groups = compare(board, output_dir)
    if problems:
        for p in problems:
            click.echo(f"MISMATCH {p}")
        click.echo(f"{len(problems)} mismatch(es) between TensorBoard and the study")
        return EXIT_MISMATCH
    click.echo(
        f"OK: {len(groups)} HParams rows match the {len(df)} trials of the study "
        "and the leaderboard"
    )
    return 0


def _stop_on_termination() -> None:
    """SIGTERM or SIGHUP (a closed terminal) end a server command as Ctrl-C does: through
    its `finally`, which stops the server it started."""
    import signal

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)
