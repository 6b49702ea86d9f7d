"""The error tree: every failure a user can meet maps to one of these and to an exit code."""

from __future__ import annotations

from collections.abc import Iterable

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_USAGE = 2
EXIT_MISMATCH = 3
EXIT_INTERRUPTED = 130


def did_you_mean(word: object, options: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the option closest to a misspelled word, else ''."""
    import difflib

    options = list(options)
    match = difflib.get_close_matches(str(word), options, n=1, cutoff=0.6)
    match = match or [o for o in options if _abbreviates(str(word), o)][:1]
    return f" (did you mean {match[0]!r}?)" if match else ""


def _abbreviates(word: str, option: str) -> bool:
    """`lr` for `learning_rate`, `depth` for `finetune_depth`: initials or one whole part."""
    parts = option.lower().split("_")
    w = word.lower()
    return len(parts) > 1 and (w == "".join(p[:1] for p in parts) or w in parts)


class TbxsweepError(Exception):
    """Base of every error tbxsweep raises on purpose."""

    exit_code = EXIT_FATAL


class SpecError(TbxsweepError):
    """Bad input: a spec or command line that cannot run. One line per problem, exit 2.

    Args:
        problems: one message per problem, each already prefixed with the file it is about.
    """

    exit_code = EXIT_USAGE

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class FatalError(TbxsweepError):
    """The sweep cannot go on (storage lost, every trial failing); the state on disk is kept."""

    exit_code = EXIT_FATAL


class Interrupted(TbxsweepError):
    """The user stopped the sweep (Ctrl-C / SIGTERM); finished trials are kept."""

    exit_code = EXIT_INTERRUPTED


class TrialFailed(Exception):
    """A trial could not finish; recorded on that trial, the sweep goes on."""
