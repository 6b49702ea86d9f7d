"""Import TensorFlow in a worker without its start-up lines on the user's terminal.

`import tensorflow` writes, from C++ straight to file descriptor 2 and before its logging
is set up, lines such as "WARNING: All log messages before absl::InitializeLog() is
called are written to STDERR", the oneDNN notice and "Could not find cuda drivers on your
machine, GPU will not be used." (twice per process with TensorFlow 2.21: two libraries
log). TF_CPP_MIN_LOG_LEVEL does not reach them, and TF_ENABLE_ONEDNN_OPTS=0 would hide
one by changing the numerics. So the import runs with fd 2 sent to a temporary file,
which is then written back without those known lines: anything else (a Python warning,
an error) still reaches the user, and everything does when the import fails.
`TBXSWEEP_TF_LOGS=1` leaves the import alone.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

LOGS_ENV = "TBXSWEEP_TF_LOGS"

# absl's INFO lines (I<mmdd> <time> <thread> <file>:<line>] ...), its notice that they go
# to stderr, and the second line of TensorFlow's CPU-feature notice.
_NOISE = re.compile(
    r"^(I\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.]+:\d+\] "
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|To enable the following instructions: .* rebuild TensorFlow)"
)


def import_tensorflow() -> None:
    """Import TensorFlow once in this process, its start-up lines filtered (see module)."""
    if "tensorflow" in sys.modules:
        return
    with quiet_startup():
        import tensorflow  # noqa: F401


@contextlib.contextmanager
def quiet_startup() -> Iterator[None]:
    """Run the block with fd 2 captured, then write back what it wrote there less
    TensorFlow's start-up lines; everything when the block raises. For the imports a
    worker does before its first trial: TensorFlow's, and a `task.train` module's (which
    may import TensorFlow itself)."""
    if os.environ.get(LOGS_ENV, "") not in ("", "0"):
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as capture:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            _replay(capture.read().decode(errors="replace"), keep_all=failed)


def _replay(text: str, *, keep_all: bool) -> None:
    lines = text.splitlines(keepends=True)
    kept = lines if keep_all else [line for line in lines if not _NOISE.match(line)]
    if kept:
        sys.stderr.write("".join(kept))
        sys.stderr.flush()
