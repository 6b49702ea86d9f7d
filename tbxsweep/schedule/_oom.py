"""Was a killed worker killed for memory? The kernel's OOM-kill counters say.

A worker that the kernel's OOM killer ends dies by SIGKILL and says nothing itself. A
SIGKILL alone proves nothing (`kill -9`, a timeout), so a trial counts as out of memory
only when its worker died by SIGKILL *and* an OOM-kill counter went up while it ran:
the memory cgroup's (`memory.events` `oom_kill` in cgroup v2, `memory.oom_control` in
v1; a container limit) or the machine's (`/proc/vmstat` `oom_kill`, Linux >= 4.13).
Where none of them exists, a killed worker stays a plain failure.
"""

from __future__ import annotations

import signal
from pathlib import Path

_CGROUP_ROOT = Path("/sys/fs/cgroup")


def _counter(path: Path, key: str = "oom_kill") -> int | None:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        return None
    return None


def _cgroup_files() -> list[Path]:
    """This process's memory cgroup counter files, v2 and v1; in a container the cgroup
    root is often the container's own cgroup, so the root's files are read as well."""
    files = [_CGROUP_ROOT / "memory.events", _CGROUP_ROOT / "memory" / "memory.oom_control"]
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return files
    for line in lines:
        _, controllers, path = line.split(":", 2)
        rel = path.lstrip("/")
        if not rel:
            continue
        if controllers == "":
            files.append(_CGROUP_ROOT / rel / "memory.events")
        elif "memory" in controllers.split(","):
            files.append(_CGROUP_ROOT / "memory" / rel / "memory.oom_control")
    return files


def oom_kills() -> tuple[int | None, ...]:
    """A snapshot of every OOM-kill counter this host exposes (None where unreadable)."""
    return (*(_counter(f) for f in _cgroup_files()), _counter(Path("/proc/vmstat")))


def killed_for_memory(exit_code: int, before: tuple[int | None, ...] | None) -> bool:
    """Whether a worker that exited with `exit_code` (negative: the signal) was most likely
    killed for memory: by SIGKILL, with an OOM-kill counter above its snapshot `before`."""
    if exit_code != -signal.SIGKILL or before is None:
        return False
    now = oom_kills()
    return any(a is not None and b is not None and b > a for a, b in zip(before, now, strict=False))
