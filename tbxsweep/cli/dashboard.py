"""optuna-dashboard on a sweep's study, started on 127.0.0.1 like `tbxsweep board`."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import IO, Any

from tbxsweep.cli.board import Server, free_port
from tbxsweep.errors import FatalError, SpecError

INSTALL_HINT = 'pip install "tbxsweep[dashboard]"'
# The storage URL reaches the server through its environment, not its command line: `ps`
# shows every process's arguments to every user, and a PostgreSQL URL holds a password.
_STORAGE_ENV = "TBXSWEEP_DASHBOARD_STORAGE"
_SERVE = "from tbxsweep.cli.dashboard import serve; serve()"  # the server process (below)


@dataclass
class Dashboard(Server):
    """A running optuna-dashboard process."""

    study_id: int
    log: IO[bytes]  # the server's stderr

    @property
    def study_url(self) -> str:
        """The dashboard's page of the sweep's study."""
        return f"{self.url}/dashboard/studies/{self.study_id}"

    def stop(self) -> None:
        super().stop()
        self.log.close()


def dashboard_installed() -> bool:
    return importlib.util.find_spec("optuna_dashboard") is not None


def start_dashboard(
    storage_url: str,
    study_name: str,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    wait_s: float = 60.0,
) -> Dashboard:
    """Start optuna-dashboard on the study's storage and wait until it answers.

    Raises:
        SpecError: optuna-dashboard is not installed, or the storage holds no such study.
        FatalError: the server exited or did not answer within `wait_s`.
    """
    if not dashboard_installed():
        raise SpecError(f"optuna-dashboard is not installed; {INSTALL_HINT}")
    study_id = _study_id(storage_url, study_name)
    port = port or free_port(host)
    # A file, not a pipe: nobody reads a pipe while the server runs, and a full one would
    # stop it; read back only when the server dies at start, closed with the server.
    log = tempfile.TemporaryFile()  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVE, host, str(port)],
        env={**os.environ, _STORAGE_ENV: storage_url},
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    dash = Dashboard(proc, host, port, study_id, log)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            why = _last_line(log, proc.returncode)
            log.close()
            raise FatalError(f"optuna-dashboard did not start: {why}")
        try:
            with urllib.request.urlopen(f"{dash.url}/dashboard", timeout=2):
                return dash
        except (urllib.error.URLError, OSError):
            time.sleep(0.25)
    dash.stop()
    raise FatalError(f"optuna-dashboard did not answer on {dash.url} within {wait_s:.0f} s")


def _study_id(storage_url: str, study_name: str) -> int:
    """The study's id in its storage (the dashboard's page of it); a missing SQLite file
    is not created."""
    from tbxsweep.study import get_storage, read_study_trials

    read_study_trials(storage_url, study_name)  # the one-line error for a missing study
    return int(get_storage(storage_url).get_study_id_from_name(study_name))


def _last_line(log: IO[bytes], returncode: int | None) -> str:
    log.seek(0)
    err = log.read().decode(errors="replace").strip()
    return err.splitlines()[-1] if err else f"exit code {returncode}"


def serve() -> None:
    """The server process: optuna-dashboard's WSGI app (public `optuna_dashboard.wsgi`) on
    tbxsweep's own storage (SQLite in WAL mode, so its reads never block a running sweep;
    journal:/// files), threaded, without a log line per request. argv: HOST PORT."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from optuna_dashboard import wsgi

    from tbxsweep.study import get_storage

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    _exit_with_parent()
    app = wsgi(get_storage(os.environ.pop(_STORAGE_ENV)))
    host, port = sys.argv[1], int(sys.argv[2])
    make_server(host, port, app, server_class=Server, handler_class=Quiet).serve_forever()


def _exit_with_parent() -> None:
    """The server never outlives `tbxsweep dashboard` (killed, say, before it could stop
    the server): an orphan would hold its port and the storage open."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="tbxsweep-parent-watch", daemon=True).start()
