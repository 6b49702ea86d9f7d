"""Private parts of other libraries are used only where no public API does the job, and each
library used that way has an upper version bound in pyproject.toml (and the installed version
is inside the bounds the suite vouches for)."""

from __future__ import annotations

import re
import sys
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest depends on tomli before 3.11
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent

# pattern in tbxsweep/ -> the distribution whose private API it is
PRIVATE_USES = {
    r"keras\.src\b": "keras",
    r"\._storage\b": "optuna",
    r"\._trial_id\b": "optuna",
    r"\._contains\(": "optuna",
    r"\bFROM (trials|trial_values|trial_params|studies)\b": "optuna",
    r"_ExecutorManagerThread": "joblib",
    r"[\"\.]_processes\b": "joblib",
    r"\.file_writer\b": "tensorboardX",
    r"tensorboardX\.proto\b": "tensorboardX",
    r"/data/plugin/hparams/": "tensorboard",
}
# private uses that have a public replacement and must not come back
REPLACED = {
    r"_get_file_writer\(": "SummaryWriter.file_writer",
    r"optuna\.trial\.Trial\(": "storage.set_trial_intermediate_value + pruner.prune",
}


def _source() -> dict[str, str]:
    return {
        str(p.relative_to(REPO)): p.read_text() for p in sorted((REPO / "tbxsweep").rglob("*.py"))
    }


def _requirements() -> dict[str, Requirement]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return {Requirement(d).name.lower(): Requirement(d) for d in deps}


def test_libraries_used_privately_are_bounded_and_installed_within_bounds() -> None:
    reqs = _requirements()
    used = {
        dist
        for pattern, dist in PRIVATE_USES.items()
        for text in _source().values()
        if re.search(pattern, text)
    }
    assert used, "the patterns no longer match anything: update PRIVATE_USES"
    for dist in sorted(used):
        req = reqs.get(dist.lower())
        assert req is not None, f"{dist} is used privately but is not a dependency"
        assert any(s.operator in ("<", "<=", "~=", "==") for s in req.specifier), (
            f"{dist} is used privately (see PRIVATE_USES) but has no upper bound: {req}"
        )
        assert req.specifier.contains(version(dist), prereleases=True), (
            f"installed {dist} {version(dist)} is outside {req.specifier}"
        )


def test_private_uses_with_a_public_replacement_stay_gone() -> None:
    found = [
        f"{path}: {pattern} (use {instead})"
        for pattern, instead in REPLACED.items()
        for path, text in _source().items()
        if re.search(pattern, text)
    ]
    assert found == []
