"""Ctrl-C and SIGTERM: the first asks the sweep to wind down, the second to stop now."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any


class StopRequest:
    """Counts stop signals; the scheduler polls it between waits."""

    def __init__(self) -> None:
        self.count = 0
        self.first_at = 0.0

    def request(self) -> None:
        if self.count == 0:
            self.first_at = time.monotonic()
        self.count += 1

    def now(self, grace_s: float) -> bool:
        """Whether running trials must stop now: a second request, or the first one's
        grace period is over."""
        if self.count >= 2:
            return True
        return self.count == 1 and time.monotonic() - self.first_at > grace_s


@contextlib.contextmanager
def handle_signals(
    stop: StopRequest, on_signal: Callable[[int], None] | None = None
) -> Iterator[StopRequest]:
    """Route SIGINT and SIGTERM to `stop` for the duration of the block."""

    def handler(signum: int, frame: Any) -> None:
        stop.request()
        if on_signal is not None:
            on_signal(stop.count)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)
