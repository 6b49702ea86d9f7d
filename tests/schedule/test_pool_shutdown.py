"""Stopping the loky workers leaves nothing on the terminal: a spec error found once the
workers started is one line, with no traceback of loky's manager thread after it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from conftest import cli_env

# Workers started and stopped at once, as `tbxsweep start` does when the spec check that
# follows the workers' start fails: with the jobs submitted a moment before, loky's
# `shutdown(kill_workers=True)` raced its own manager thread (`KeyError: 3` on stderr, about
# one stop in ten).
STOP_AT_ONCE = textwrap.dedent(
    """
    import time
    from tbxsweep.jobs import SlotPlan
    from tbxsweep.schedule import LokyPool, release_workers

    for i in range(25):
        pool = LokyPool(SlotPlan("", ("", ""), 1))
        for _ in range(2 + i % 3):
            pool.submit(time.sleep, 3)
        if i % 2:
            pool.kill_workers()
        release_workers()
    print("stopped")
    """
)


def test_workers_stopped_right_after_their_jobs_were_submitted_print_nothing() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", STOP_AT_ONCE],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "stopped\n", "")


def test_a_spec_error_found_after_the_workers_started_is_the_only_line_on_stderr(
    make_spec, tmp_path, run_cli
) -> None:
    path = make_spec(
        base="digits",
        search_space={"finetune_depth": {"type": "int", "low": 10, "high": "max"}},
        resources={"gpus": "none", "n_jobs": 2},
    )
    res = run_cli("start", str(path))
    assert (res.returncode, res.stdout, res.stderr) == (
        2,
        "",
        f"error: {path}: search_space.finetune_depth.low: `low <= 4` must hold (high: max is "
        "the base model's 4 weighted layers), got low=10\n",
    )
    assert not (tmp_path / "out").exists()
