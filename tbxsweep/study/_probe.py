"""Open a spec's storage before the sweep writes anything: a wrong URL, a missing driver or
an unreachable database is a one-line spec error, not a traceback after the workers started."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tbxsweep.errors import SpecError
from tbxsweep.paths import unwritable_dir
from tbxsweep.spec import messages as msg
from tbxsweep.study._build import redact_text, redact_url


def probe_storage(url: str, where: str) -> None:
    """Open the storage named by `study.storage` without writing to it."""
    shown = redact_url(url)
    if url.startswith(("sqlite:///", "journal:///")):
        # The file's directory must exist (nothing creates it) and be writable, for real.
        parent = Path(url.split(":///", 1)[1].partition("?")[0]).parent
        if not parent.is_dir() or unwritable_dir(parent) is not None:
            why = f"{parent} is not a writable directory"
            raise SpecError(msg.at(f"{where}: study.storage", msg.cannot_open(shown, why)))
        return
    if "://" not in url:
        raise SpecError(
            f"{where}: study.storage: must be an Optuna storage URL like "
            f"'sqlite:///path/study.db', 'postgresql://user@host/db' or "
            f"'journal:///path/study.log', got {shown!r}"
        )
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url, connect_args=_connect_timeout(url))
        with engine.connect():
            pass
        engine.dispose()
    except ModuleNotFoundError as exc:
        why = (
            f"its database driver is not installed (No module named {exc.name!r}); "
            "for PostgreSQL: pip install 'tbxsweep[postgres]'"
        )
        raise SpecError(msg.at(f"{where}: study.storage", msg.cannot_open(shown, why))) from None
    except Exception as exc:  # any driver error means the same to the user
        text = redact_text(" ".join(str(getattr(exc, "orig", None) or exc).split()), url)
        raise SpecError(
            msg.at(f"{where}: study.storage", msg.cannot_open(shown, text[:200]))
        ) from None


def _connect_timeout(url: str) -> dict[str, Any]:
    return {"connect_timeout": 5} if url.startswith(("postgresql", "mysql")) else {}
