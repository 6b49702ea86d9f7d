"""A lock that every orchestrator of one study takes to count trials and ask for one.

With several orchestrators (terminals or hosts) on one study, counting finished and
running trials and asking for a new one must happen one at a time, or together they
would start more than `n_trials`. PostgreSQL: an advisory lock in the database itself
(works across hosts); anything else: a lock file next to the storage or in the output
directory (works on one machine, and across hosts on a file system with working locks).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlalchemy

# One engine (one pooled connection) per PostgreSQL URL, for the life of the process.
_engines: dict[str, sqlalchemy.Engine] = {}


def _key(study_name: str) -> int:
    return int.from_bytes(hashlib.sha256(study_name.encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def study_lock(storage_url: str, study_name: str, fallback_dir: Path) -> Iterator[None]:
    if storage_url.startswith("postgresql"):
        import sqlalchemy

        engine = _engines.get(storage_url)
        if engine is None:
            engine = sqlalchemy.create_engine(storage_url, pool_pre_ping=True, pool_size=1)
            _engines[storage_url] = engine
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": _key(study_name)})
            try:
                yield
            finally:
                conn.execute(
                    sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": _key(study_name)}
                )
                conn.commit()
        return
    if storage_url.startswith(("journal:///", "sqlite:///")):
        path = Path(storage_url.split(":///", 1)[1]).with_suffix(".ask.lock")
    else:
        path = fallback_dir / ".ask.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield
