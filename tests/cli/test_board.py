"""`tbxsweep board` never leaves its TensorBoard behind: not when the command is stopped with
SIGTERM or SIGHUP (it stops the server, as Ctrl-C does), not when it is killed outright (the
kernel sends the server SIGTERM when its parent dies)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from conftest import spawn_cli

from tbxsweep.paths import SweepPaths
from tbxsweep.spec import load_spec
from tbxsweep.study import write_sweep_info


def _board(make_spec, tmp_path: Path) -> tuple[subprocess.Popen[str], psutil.Process]:
    spec = load_spec(make_spec())
    out = tmp_path / "out"
    out.mkdir()
    write_sweep_info(spec, SweepPaths(out), created_at=0.0)
    proc = spawn_cli("board", str(out))
    line = proc.stdout.readline() if proc.stdout else ""
    assert line.startswith(f"TensorBoard on {out}: http://127.0.0.1:"), line
    (server,) = psutil.Process(proc.pid).children()
    assert "tensorboard" in " ".join(server.cmdline())
    return proc, server


def _gone(server: psutil.Process, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not server.is_running() or server.status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_stopped_board_stops_its_tensorboard(make_spec, tmp_path: Path, sig: int) -> None:
    proc, server = _board(make_spec, tmp_path)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert err.splitlines() == ["interrupted"]
    assert _gone(server, 5.0)


def test_a_killed_board_takes_its_tensorboard_along(make_spec, tmp_path: Path) -> None:
    proc, server = _board(make_spec, tmp_path)
    proc.kill()
    proc.wait(10)
    try:
        assert _gone(server, 5.0)
    finally:
        if server.is_running():
            server.kill()
