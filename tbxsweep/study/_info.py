"""sweep.json: what `tbxsweep start` records in an output directory so that `leaderboard`,
`board`, `check` and `best` find the study again."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from tbxsweep.errors import SpecError
from tbxsweep.paths import SweepPaths
from tbxsweep.spec import Spec
from tbxsweep.study._build import redact_url


@dataclass(frozen=True)
class SweepInfo:
    """What sweep.json records so that `leaderboard`, `board` and `check` find the study."""

    study_name: str
    storage: str | None  # None: the SQLite file in the output directory
    direction: str
    metric: str
    params: tuple[str, ...]

    @classmethod
    def of(cls, spec: Spec) -> SweepInfo:
        storage = redact_url(spec.study.storage) if spec.study.storage else None
        return cls(
            spec.study.name,
            storage,
            spec.study.direction,
            spec.study.metric,
            tuple(spec.search_space),
        )

    def storage_url(self, paths: SweepPaths) -> str:
        return self.storage or paths.default_storage_url()


def read_sweep_info(output_dir: str | Path) -> tuple[SweepInfo, SweepPaths]:
    """Find a sweep's study from its output directory.

    Raises:
        SpecError: the directory holds no sweep.
    """
    paths = SweepPaths(Path(output_dir))
    if not paths.sweep_json.is_file():
        raise SpecError(
            f"{output_dir}: not a tbxsweep output directory (no {paths.sweep_json.name}); "
            "give the output.dir of a sweep started with `tbxsweep start`"
        )
    raw = json.loads(paths.sweep_json.read_text())
    info = SweepInfo(
        raw["study_name"], raw.get("storage"), raw["direction"], raw["metric"], tuple(raw["params"])
    )
    env = os.environ.get("TBXSWEEP_STORAGE")
    if env:
        info = SweepInfo(info.study_name, env, info.direction, info.metric, info.params)
    return info, paths


def write_sweep_info(spec: Spec, paths: SweepPaths, created_at: float) -> None:
    """Record the study of `spec` in its output directory (atomically)."""
    info = SweepInfo.of(spec)
    data = {**info.__dict__, "params": list(info.params), "created_at": created_at}
    tmp = paths.sweep_json.with_name(f".{paths.sweep_json.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, paths.sweep_json)


def recorded_study(paths: SweepPaths) -> tuple[str, str | None] | None:
    """(study name, storage as recorded) of the sweep in `paths`; None where there is none
    yet or its sweep.json cannot be read (it is written atomically)."""
    try:
        raw = json.loads(paths.sweep_json.read_text())
        return str(raw["study_name"]), raw.get("storage")
    except (OSError, ValueError, KeyError, TypeError):
        return None
