"""Shared by datasets and backbones: where Keras keeps its cache, and `module:function` refs."""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tbxsweep.errors import SpecError
from tbxsweep.spec import messages as msg

_REF = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def keras_home(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The Keras cache root: `explicit`, else `$KERAS_HOME`, else `~/.keras` (as Keras does).

    Keras reads `KERAS_HOME` once, when it is imported; this reads it on every call, so
    a worker can be pointed elsewhere without re-importing Keras.
    """
    if explicit is not None:
        return Path(explicit).expanduser()
    env = os.environ.get("KERAS_HOME")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".keras"


def import_function(ref: str, where: str) -> Callable[..., Any]:
    """Import `package.module:function`.

    Args:
        ref: the reference, as the spec gives it.
        where: the spec path the reference came from, prefixed to every error.

    Raises:
        SpecError: bad format, the module does not import, or the name is not a function.
    """
    if not isinstance(ref, str) or not _REF.fullmatch(ref):
        raise SpecError(msg.at(where, msg.function_ref(ref)))
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise SpecError(msg.at(where, msg.cannot_import(module_name))) from None
        raise SpecError(msg.at(where, msg.cannot_import(module_name, exc))) from exc
    except Exception as exc:  # the user's module itself is broken: say how
        raise SpecError(msg.at(where, msg.cannot_import(module_name, exc))) from exc
    fn = getattr(module, attr, None)
    if fn is None:
        raise SpecError(f"{where}: module {module_name!r} has no function {attr!r}")
    if not callable(fn):
        raise SpecError(f"{where}: {ref!r} is a {type(fn).__name__}, not a function")
    return fn
