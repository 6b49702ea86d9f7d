"""A TensorBoard server on a sweep's directory, and its HParams plugin read over HTTP."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tbxsweep.errors import FatalError

ALL_STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


_S = TypeVar("_S", bound="Server")


@dataclass
class Server:
    """A local HTTP server process a command started: its address, and how to stop it."""

    process: subprocess.Popen[bytes]
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


@dataclass
class Board(Server):
    """A running `tensorboard` process."""

    @property
    def hparams_url(self) -> str:
        return f"{self.url}/#hparams"

    def post(self, route: str, body: dict[str, Any], timeout: float = 30.0) -> Any:
        req = urllib.request.Request(
            f"{self.url}{route}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())

    def experiment(self) -> dict[str, Any]:
        """The HParams experiment: hparam infos (with domains) and metric infos."""
        return self.post("/data/plugin/hparams/experiment", {"experimentName": ""})

    def session_groups(self) -> list[dict[str, Any]]:
        """Every session group (one per trial), whatever its status."""
        body = {
            "experimentName": "",
            "allowedStatuses": ALL_STATUSES,
            "colParams": [],
            "startIndex": 0,
            "sliceSize": 100000,
        }
        return list(self.post("/data/plugin/hparams/session_groups", body).get("sessionGroups", []))


def die_with_parent() -> Callable[[], None] | None:
    """A function for a child to run between fork and exec (Linux): it asks the kernel for a
    SIGTERM when the process that started it ends, however it ends (`kill -9` included), so
    no server outlives its command. `prctl` is looked up here, in the parent: after a fork
    only the call itself runs."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import signal

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig, sigterm = 1, int(signal.SIGTERM)

    def in_child() -> None:
        prctl(pr_set_pdeathsig, sigterm, 0, 0, 0)

    return in_child


def start_board(
    logdir: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    wait_s: float = 90.0,
    reload_interval: float = 2.0,
) -> Board:
    """Start TensorBoard on `logdir` and wait until it answers.

    Raises:
        FatalError: `tensorboard` is not installed or did not answer within `wait_s`.
    """
    port = port or free_port(host)
    exe = shutil.which("tensorboard")
    cmd = [exe] if exe else [sys.executable, "-m", "tensorboard.main"]
    proc = subprocess.Popen(
        [
            *cmd,
            "--logdir",
            str(logdir),
            "--host",
            host,
            "--port",
            str(port),
            "--reload_interval",
            str(reload_interval),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=die_with_parent(),
    )
    board = Board(proc, host, port)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = (proc.stderr.read() if proc.stderr else b"").decode(errors="replace")
            last = err.strip().splitlines()[-1] if err.strip() else f"exit code {proc.returncode}"
            raise FatalError(f"tensorboard did not start: {last}")
        try:
            with urllib.request.urlopen(f"{board.url}/data/plugins_listing", timeout=2):
                return board
        except (urllib.error.URLError, OSError):
            time.sleep(0.25)
    board.stop()
    raise FatalError(f"tensorboard did not answer on {board.url} within {wait_s:.0f} s")
