"""The command line: parse, call one function, map errors to exit codes. No logic here."""

from __future__ import annotations

import sys
import traceback
from typing import Any

import click

from tbxsweep.errors import EXIT_FATAL, EXIT_INTERRUPTED, EXIT_USAGE, TbxsweepError


class _Group(click.Group):
    def main(self, *args: Any, **kwargs: Any) -> Any:
        """Usage mistakes get one line and exit code 2, like every other bad input."""
        standalone = kwargs.pop("standalone_mode", True)
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)  # type: ignore[call-overload]
        except click.UsageError as exc:
            if type(exc).__name__ == "NoArgsIsHelpError" and exc.ctx is not None:
                click.echo(exc.ctx.get_help())
                return 0 if not standalone else sys.exit(0)
            where = exc.ctx.command_path if exc.ctx else "tbxsweep"
            click.echo(f"error: {exc.format_message()} (see '{where} --help')", err=True)
            rv = EXIT_USAGE
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            rv = exc.exit_code
        except click.exceptions.Abort:
            click.echo("interrupted", err=True)
            rv = EXIT_INTERRUPTED
        if not standalone:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TbxsweepError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                traceback.print_exc()
            for line in str(exc).splitlines() or [type(exc).__name__]:
                click.echo(f"error: {line}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as exc:  # a bug: one line, the traceback with --debug
            if ctx.obj and ctx.obj.get("debug"):
                raise
            text = " ".join(str(exc).split())[:300]
            click.echo(
                f"error: internal error: {type(exc).__name__}: {text} "
                "(run with --debug for the traceback, and please report it)",
                err=True,
            )
            ctx.exit(EXIT_FATAL)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="tbxsweep")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Hyperparameter sweeps for fine-tuning Keras models, compared in TensorBoard."""
    ctx.obj = {"debug": debug}


def _spec_and_overrides(command: Any) -> Any:
    """SPEC and its repeatable --set, shared by `start` and `worker`."""
    command = click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override a spec key by its dotted path, e.g. study.n_trials=4 (repeatable).",
    )(command)
    return click.argument("spec", type=click.Path(dir_okay=True))(command)


@main.command()
@_spec_and_overrides
@click.option(
    "--fork",
    is_flag=True,
    help="The spec changed under an existing study: start a new study <name>-forkN in "
    "<output.dir>-forkN, seeded with the old study's finished trials.",
)
def start(spec: str, overrides: tuple[str, ...], fork: bool) -> None:
    """Run (or continue) the sweep described by SPEC."""
    from tbxsweep.cli.commands import start_command

    start_command(spec, overrides, fork)


@main.command()
@_spec_and_overrides
def worker(spec: str, overrides: tuple[str, ...]) -> None:
    """Join the existing study of SPEC (a shared study.storage) from another host and run
    its trials here until it has n_trials finished trials in total."""
    from tbxsweep.cli.commands import start_command

    start_command(spec, overrides, join=True)


@main.command()
@click.argument("output_dir", type=click.Path())
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(dir_okay=False),
    help="Write the leaderboard to this CSV file.",
)
@click.option("--top", type=int, default=None, help="Show only the first N rows.")
def leaderboard(output_dir: str, csv_path: str | None, top: int | None) -> None:
    """Print the ranked trials of the sweep in OUTPUT_DIR."""
    from tbxsweep.cli.commands import leaderboard_command

    leaderboard_command(output_dir, csv_path, top)


@main.command()
@click.argument("output_dir", type=click.Path())
@click.option("--trial", "number", type=int, default=None, help="This trial instead of the best.")
@click.option(
    "--save",
    type=click.Path(dir_okay=False),
    default=None,
    help="Copy the trial's model to this .keras file.",
)
@click.option("--force", is_flag=True, help="With --save: replace the file if it exists.")
def best(output_dir: str, number: int | None, save: str | None, force: bool) -> None:
    """Print the best trial of the sweep in OUTPUT_DIR and the path of its kept model."""
    from tbxsweep.cli.commands import best_command

    best_command(output_dir, number, save, force)


def _serve_options(what: str) -> Any:
    """--host and --port of a command that starts a server (`what`: for the help)."""

    def add(fn: Any) -> Any:
        fn = click.option("--port", type=int, default=None, help="Port (default: a free one).")(fn)
        return click.option(
            "--host",
            default="127.0.0.1",
            show_default=True,
            help=f"Address to bind; the default keeps {what} private to this machine.",
        )(fn)

    return add


@main.command()
@click.argument("output_dir", type=click.Path())
@_serve_options("TensorBoard")
def board(output_dir: str, host: str, port: int | None) -> None:
    """Start TensorBoard on OUTPUT_DIR and print the HParams tab's URL."""
    from tbxsweep.cli.commands import board_command

    board_command(output_dir, host, port)


@main.command()
@click.argument("output_dir", type=click.Path())
@_serve_options("the dashboard")
def dashboard(output_dir: str, host: str, port: int | None) -> None:
    """Start optuna-dashboard on the study of OUTPUT_DIR and print its URL
    (pip install "tbxsweep[dashboard]")."""
    from tbxsweep.cli.commands import dashboard_command

    dashboard_command(output_dir, host, port)


@main.command()
@click.argument("output_dir", type=click.Path())
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the page here (default: OUTPUT_DIR/report.html).",
)
@click.option(
    "--top", type=click.IntRange(min=1), default=10, show_default=True, help="Leaderboard rows."
)
def report(output_dir: str, out: str | None, top: int) -> None:
    """Write one self-contained HTML page of the sweep in OUTPUT_DIR: optimisation history,
    parallel coordinates, importances, validation curves and the leaderboard's top rows."""
    from tbxsweep.cli.commands import report_command

    report_command(output_dir, out, top)


@main.command()
@click.argument("output_dir", type=click.Path())
@click.pass_context
def check(ctx: click.Context, output_dir: str) -> None:
    """Verify TensorBoard's HParams tab against the study and the leaderboard."""
    from tbxsweep.cli.commands import check_command

    ctx.exit(check_command(output_dir))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
