"""Build Optuna objects from a validated spec."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from tbxsweep.errors import SpecError
from tbxsweep.paths import SweepPaths
from tbxsweep.spec import CategoricalParam, FloatParam, IntParam, Spec, enqueue_params
from tbxsweep.spec import messages as msg
from tbxsweep.study._attrs import (
    ENQUEUED_ATTR,
    RECORD_ATTR,
    SEEDED_ATTR,
    SPEC_ATTR,
    STARTS_ATTR,
)
from tbxsweep.study._lock import study_lock

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution
    from optuna.pruners import BasePruner
    from optuna.samplers import BaseSampler
    from optuna.storages import BaseStorage
    from optuna.trial import FrozenTrial

    from tbxsweep.study._fastread import TrialView

FINISHED_STATES = ("COMPLETE", "PRUNED")


def _quiet_optuna() -> None:
    """Optuna's INFO lines (one per trial) would break into the progress display."""
    import optuna

    optuna.logging.set_verbosity(logging.WARNING)


def distributions(spec: Spec) -> dict[str, BaseDistribution]:
    """The Optuna distribution of every search-space key, in the spec's order.

    The spec's `high: max` must be resolved already (`tbxsweep.spec.resolve_space`, which
    checks the bounds against the base model's depth).
    """
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out: dict[str, BaseDistribution] = {}
    for key, p in spec.search_space.items():
        if isinstance(p, FloatParam):
            out[key] = FloatDistribution(p.low, p.high, log=p.log, step=p.step)
        elif isinstance(p, IntParam):
            if p.high == "max":
                raise ValueError(f"search_space.{key}.high: 'max' must be resolved first")
            out[key] = IntDistribution(p.low, p.high, log=p.log, step=p.step)
        elif isinstance(p, CategoricalParam):
            out[key] = CategoricalDistribution(list(p.choices))
    return out


def build_sampler(spec: Spec, offset: int, dists: dict[str, BaseDistribution]) -> BaseSampler:
    """The spec's sampler, its seed moved on by `offset` (see `open_study`): a resumed or a
    second orchestrator must not draw the parameters another one drew."""
    import optuna

    _quiet_optuna()
    s = spec.study.sampler
    seed = None if s.seed is None else s.seed + offset
    if s.name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=s.n_startup_trials)
    if s.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=s.n_startup_trials)
    if s.name == "qmc":
        return optuna.samplers.QMCSampler(seed=s.seed, scramble=s.seed is not None)
    return _grid_sampler()(_grid(dists), seed=seed)


def _grid_sampler() -> type[optuna.samplers.GridSampler]:
    import optuna

    _quiet_optuna()

    class GridSampler(optuna.samplers.GridSampler):
        """Optuna's grid sampler, minus its `Study.stop()` once the grid is done: that only
        works inside `optimize()`; tbxsweep's ask/tell loop stops at `n_trials` itself."""

        def after_trial(
            self,
            study: optuna.Study,
            trial: FrozenTrial,
            state: optuna.trial.TrialState,
            values: Sequence[float] | None,
        ) -> None:
            return None

    return GridSampler


def _grid(dists: dict[str, BaseDistribution]) -> dict[str, list[Any]]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    grid: dict[str, list[Any]] = {}
    for key, d in dists.items():
        if isinstance(d, CategoricalDistribution):
            grid[key] = list(d.choices)
        elif isinstance(d, IntDistribution):
            grid[key] = list(range(d.low, d.high + 1, d.step))
        elif isinstance(d, FloatDistribution) and d.step is not None:
            n = round((d.high - d.low) / d.step)
            grid[key] = [round(d.low + i * d.step, 12) for i in range(n + 1)]
    return grid


def build_pruner(spec: Spec) -> BasePruner:
    import optuna

    _quiet_optuna()
    p = spec.study.pruner
    if p.name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps
        )
    if p.name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=p.min_resource,
            max_resource=spec.task.epochs,
            reduction_factor=p.reduction_factor,
        )
    if p.name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=p.min_resource, reduction_factor=p.reduction_factor
        )
    return optuna.pruners.NopPruner()


def resolve_storage_url(spec: Spec) -> str:
    """The storage URL: `study.storage`, or a SQLite file in the output directory."""
    if spec.study.storage:
        return spec.study.storage
    return SweepPaths(spec.output_dir).default_storage_url()


# Query parameters whose value is a secret (`?password=`, libpq's `sslpassword`, `token`...).
_SECRET_PARAM = re.compile(r"password|passwd|pwd|secret|token", re.IGNORECASE)


def _split_secrets(url: str) -> tuple[str, list[str]]:
    """(the URL with its secrets replaced by `***`, those secrets): the userinfo password
    and the values of secret query parameters."""
    scheme, sep, rest = url.partition("://")
    if not sep:  # not a URL: anything between a ':' and an '@' may be a password
        found = re.search(r":([^@/]+)@", url)
        if not found:
            return url, []
        return url[: found.start(1)] + "***" + url[found.end(1) :], [found.group(1)]
    secrets: list[str] = []
    head, qmark, query = rest.partition("?")
    if not head.startswith("/"):  # an authority: [user[:password]@]host (sqlite:/// has none)
        userinfo, at, host = head.rpartition("@")
        user, colon, password = userinfo.partition(":")
        if at and colon and password:
            secrets.append(password)
            head = f"{user}:***@{host}"
    query, hash_, fragment = query.partition("#")
    pairs = []
    for pair in query.split("&") if qmark else []:
        key, eq, value = pair.partition("=")
        if eq and value and _SECRET_PARAM.search(unquote_plus(key)):
            secrets.append(value)
            pair = f"{key}=***"
        pairs.append(pair)
    return f"{scheme}://{head}{qmark}{'&'.join(pairs)}{hash_}{fragment}", secrets


def no_study_to_join(spec: Spec, storage_url: str, where: str) -> str:
    """The one line for `tbxsweep worker` (or `start --join`) without a study to join."""
    return (
        f"{where + ': ' if where else ''}there is no study {spec.study.name!r} in "
        f"{redact_url(storage_url)} to join: start it with `tbxsweep start` first"
    )


def redact_url(url: str) -> str:
    """A storage URL with every secret in it replaced by `***`, for messages and files.

    `postgresql://user:secret@host/db`, `postgresql://:secret@host/db` and
    `postgresql://user@host/db?password=secret` all keep their shape with `***` instead.
    """
    return _split_secrets(url)[0]


def redact_text(text: str, url: str) -> str:
    """`text` (a driver's error message, say) with the secrets of `url` replaced by `***`."""
    text = text.replace(url, redact_url(url))
    for secret in sorted(_split_secrets(url)[1], key=len, reverse=True):
        for form in {secret, unquote_plus(secret)}:
            text = text.replace(form, "***")
    return text


# What may not change under an existing study: its trials would stop being comparable.
FIXED_SECTIONS = (
    "study.direction",
    "study.metric",
    "study.objectives",
    "study.constraints",
    "study.repeats",
    "search_space",
    "task",
)
# Keys of a fixed section that only steer how trials run, never what they compute: a
# resumed study may change them (raise a timeout that cut trials short, for one).
RUNTIME_KEYS = frozenset({"task.trial_timeout_s", "task.checkpoint_every_s"})


def open_study(
    spec: Spec,
    storage_url: str,
    *,
    create: bool = True,
    dists: dict[str, BaseDistribution] | None = None,
    where: str = "",
) -> optuna.Study:
    """Create or continue the spec's study.

    Raises:
        SpecError: the storage cannot be opened, or the study was started with another
            search space or task (the message says what differs and how to go on).
        SpecError: also when `create` is false and there is no such study.
    """
    import optuna

    _quiet_optuna()
    # Two orchestrators starting at once must not both create the tables or the study.
    lock_dir = spec.output_dir
    lock_dir.mkdir(parents=True, exist_ok=True)
    with study_lock(storage_url, spec.study.name, lock_dir):
        storage = _get_storage(storage_url)
        name = spec.study.name
        existing = set(optuna.get_all_study_names(storage))
        if name not in existing and not create:
            raise SpecError(no_study_to_join(spec, storage_url, where))
        n_existing = starts = 0
        if name in existing:
            old = optuna.load_study(study_name=name, storage=storage)
            # A COUNT, not a load of every trial (seconds for a long study).
            n_existing = storage.get_n_trials(storage.get_study_id_from_name(name))
            starts = int(old.user_attrs.get(STARTS_ATTR, 0))
            _refuse_changed_spec(spec, old, storage_url, where)
        dists = dists if dists is not None else distributions(spec)
        # The seed moves on by both counts, taken under the lock: the first orchestrator on
        # a new study keeps the spec's seed (reproducible), one started beside it gets
        # another, and a resume (more trials, one more start) never reuses an earlier one.
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            directions=[g.direction for g in spec.study.goals],
            sampler=build_sampler(spec, n_existing + starts, dists),
            pruner=build_pruner(spec),
            load_if_exists=True,
        )
        study.set_user_attr(STARTS_ATTR, starts + 1)
        enqueue_known(study, spec)
        if SPEC_ATTR not in study.user_attrs:
            study.set_user_attr(SPEC_ATTR, _stored_spec(spec))
    return study


def close_storage(study: optuna.Study) -> None:
    """Close the study's database connections now rather than whenever the garbage
    collector gets to them: SQLite then folds its write-ahead log into study.db (no
    study.db-wal or -shm left beside it) and a database server sees the session end. The
    storage stays usable: it connects again when asked."""
    storage = study._storage  # no public handle; Optuna wraps an RDBStorage in a cache
    backend = getattr(storage, "_backend", storage)
    engine = getattr(backend, "engine", None)
    if engine is not None:
        backend.remove_session()
        engine.dispose()


def enqueue_known(study: optuna.Study, spec: Spec) -> int:
    """Queue the spec's `study.enqueue` configurations, in order, ahead of the sampler's.

    One the study already holds is not queued again: queued, running or run (in any
    state, seeded trials of a fork included), by Optuna's rule for `skip_if_exists`: the
    same keys and values as what a trial was enqueued with, else as its parameters. So a
    resume, or a second orchestrator joining, adds nothing. Called under the study lock
    (`open_study`), so two orchestrators do not both queue one. Returns how many it queued.
    """
    entries = enqueue_params(spec.study.enqueue, spec.search_space)
    if not entries:
        return 0  # no read of every trial (seconds for a long study) for nothing
    # One read, not Optuna's one per `enqueue_trial(skip_if_exists=True)`.
    held = [t.system_attrs.get("fixed_params", t.params) for t in study.get_trials(deepcopy=False)]
    n = 0
    for i, params in enumerate(entries):
        if any(_same_params(params, other) for other in held):
            continue
        study.enqueue_trial(params, user_attrs={ENQUEUED_ATTR: i}, skip_if_exists=False)
        held.append(params)
        n += 1
    return n


def queued_known(trials: Sequence[FrozenTrial]) -> int:
    """How many of `study.enqueue`'s configurations wait to run (for the first lines)."""
    return sum(1 for t in trials if t.state.name == "WAITING" and ENQUEUED_ATTR in t.user_attrs)


def _same_params(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Optuna's `skip_if_exists` rule: the same keys, each value of the same type, floats
    equal to a relative 1e-5 (its `numpy.isclose`: a YAML 0.1 and a stored 0.1 may differ
    in the last bit), anything else equal."""
    if a.keys() != b.keys():
        return False
    for k, x in a.items():
        y = b[k]
        if type(x) is not type(y):
            return False
        if not (abs(x - y) <= 1e-5 * abs(y) if isinstance(x, float) else x == y):
            return False
    return True


def _get_storage(storage_url: str) -> BaseStorage:
    import optuna

    _quiet_optuna()
    try:
        if storage_url.startswith("journal:///"):
            from optuna.storages.journal import JournalFileBackend

            return optuna.storages.JournalStorage(
                JournalFileBackend(storage_url[len("journal:///") :])
            )
        if storage_url.startswith("sqlite:///"):
            return _sqlite_storage(storage_url)
        if storage_url.startswith(("postgresql", "mysql")):
            # pre_ping replaces connections the server dropped instead of failing on them
            return optuna.storages.RDBStorage(
                storage_url, engine_kwargs={"pool_pre_ping": True, "pool_recycle": 300}
            )
        return optuna.storages.get_storage(storage_url)
    except Exception as exc:  # any driver error means the same to the user
        why = redact_text(_first_line(exc), storage_url)
        raise SpecError(
            msg.at("study.storage", msg.cannot_open(redact_url(storage_url), why))
        ) from None


def _sqlite_storage(storage_url: str) -> BaseStorage:
    """SQLite in WAL mode with synchronous=NORMAL: readers (the workers' pruning reports,
    `tbxsweep leaderboard`) never block the orchestrator, and a commit costs no fsync.
    A crash of any process loses nothing; a power loss may lose the last commits, whose
    trials are then found running without an owner and re-run."""
    import optuna
    import sqlalchemy

    storage = optuna.storages.RDBStorage(
        storage_url, engine_kwargs={"connect_args": {"timeout": 60}}
    )

    def pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    sqlalchemy.event.listen(storage.engine, "connect", pragmas)
    storage.engine.dispose()  # reconnect with the pragmas
    return storage


def get_storage(storage_url: str) -> BaseStorage:
    """The Optuna storage behind a URL (sqlite:///, postgresql://, journal:///, ...).

    Raises:
        SpecError: it cannot be opened.
    """
    return _get_storage(storage_url)


def _spec_dict(spec: Spec) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(spec.model_dump_json())
    return out


def _stored_spec(spec: Spec) -> dict[str, Any]:
    """The spec as the study keeps it: without the storage URL's password (the attribute is
    readable by anyone who can read the study; the comparison on resume skips the URL)."""
    out = _spec_dict(spec)
    if out["study"].get("storage"):
        out["study"]["storage"] = redact_url(out["study"]["storage"])
    return out


def _as_current(stored: dict[str, Any]) -> dict[str, Any]:
    """A spec stored by this or an earlier tbxsweep, with this one's defaults for the keys
    it did not have yet (as stored, when this tbxsweep cannot read it)."""
    from pydantic import ValidationError

    try:
        return _spec_dict(Spec.model_validate(stored))
    except ValidationError:
        return stored


def spec_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """`path: was X, now Y` for every fixed key that differs between two spec dumps."""
    out: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if path in RUNTIME_KEYS:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for k in list(a) + [k for k in b if k not in a]:
                walk(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{path}.{k}" if path else k)
        elif a != b:
            out.append(f"{path} was {json.dumps(a)}, now {json.dumps(b)}")

    for section in FIXED_SECTIONS:
        keys = section.split(".")
        a: Any = old
        b: Any = new
        for k in keys:
            a = a.get(k, "<absent>") if isinstance(a, dict) else "<absent>"
            b = b.get(k, "<absent>") if isinstance(b, dict) else "<absent>"
        walk(a, b, section)
    return out


def _refuse_changed_spec(spec: Spec, old: optuna.Study, storage_url: str, where: str) -> None:
    stored = old.user_attrs.get(SPEC_ATTR)
    if stored is None:
        return
    diffs = spec_differences(_as_current(stored), _spec_dict(spec))
    if not diffs:
        return
    finished = sum(1 for t in old.get_trials(deepcopy=False) if t.state.name in FINISHED_STATES)
    prefix = f"{where}: " if where else ""
    raise SpecError(
        f"{prefix}study {spec.study.name!r} in {redact_url(storage_url)} was started with "
        f"another spec: {'; '.join(diffs)}. Give this spec a new study.name and its own "
        f"output.dir, or add --fork to start a new study seeded with the {finished} finished "
        "trial(s)"
    )


def study_exists(storage_url: str, study_name: str) -> bool:
    """Whether the storage holds the study; a missing SQLite file is not created."""
    import optuna

    _quiet_optuna()
    if storage_url.startswith("sqlite:///") and not Path(storage_url[10:]).exists():
        return False
    names = set(optuna.get_all_study_names(_get_storage(storage_url)))
    return study_name in names


def fork_study(spec: Spec, storage_url: str, where: str) -> tuple[Spec, optuna.Study]:
    """A spec for a new study next to the existing one: `<name>-forkN` in `<dir>-forkN`.

    Returns the new spec and the old study (whose finished trials seed the new one).

    Raises:
        SpecError: there is no study to fork.
    """
    import optuna

    _quiet_optuna()
    no_file = storage_url.startswith("sqlite:///") and not Path(storage_url[10:]).exists()
    # A SQLite URL creates its file when opened: do not, just to find nothing there.
    names = set() if no_file else set(optuna.get_all_study_names(_get_storage(storage_url)))
    if spec.study.name not in names:
        raise SpecError(
            f"{where}: --fork: there is no study {spec.study.name!r} in "
            f"{redact_url(storage_url)} to fork; drop --fork to start it"
        )
    storage = _get_storage(storage_url)
    old = optuna.load_study(study_name=spec.study.name, storage=storage)
    names = set(optuna.get_all_study_names(storage))
    k = 1
    while f"{spec.study.name}-fork{k}" in names or Path(f"{spec.output_dir}-fork{k}").exists():
        k += 1
    new = spec.model_copy(
        update={
            "study": spec.study.model_copy(update={"name": f"{spec.study.name}-fork{k}"}),
            "output": spec.output.model_copy(update={"dir": Path(f"{spec.output_dir}-fork{k}")}),
        }
    )
    return new, old


def seed_from(study: optuna.Study, old: optuna.Study, dists: dict[str, BaseDistribution]) -> int:
    """Copy the old study's completed trials whose parameters fit the new search space.

    Seeded trials inform the sampler but do not count towards `n_trials` and have no
    TensorBoard run. Returns how many were copied.
    """
    import optuna

    _quiet_optuna()
    if any(SEEDED_ATTR in t.user_attrs for t in study.get_trials(deepcopy=False)):
        return 0
    n = 0
    for t in old.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if set(t.params) != set(dists) or len(t.values or ()) != len(study.directions):
            continue
        if not all(_fits(dists[k], v) for k, v in t.params.items()):
            continue
        study.add_trial(
            optuna.trial.create_trial(
                params=dict(t.params),
                distributions=dists,
                values=t.values,
                system_attrs=_constraint_attrs(t),
                user_attrs={
                    SEEDED_ATTR: f"{old.study_name}#{t.number}",
                    RECORD_ATTR: {**t.user_attrs.get(RECORD_ATTR, {}), "run": ""},
                },
            )
        )
        n += 1
    return n


def _constraint_attrs(t: FrozenTrial) -> dict[str, Any]:
    """A trial's Optuna constraint values, as system attributes to copy: a seeded trial
    that was infeasible stays so for the sampler. `create_trial` takes no constraints; the
    key is the one `Trial.set_constraint` writes (Optuna 5.0's `constraints:<name>`)."""
    return {f"constraints:{k}": v for k, v in t.constraints.items()}


def _fits(dist: BaseDistribution, value: Any) -> bool:
    try:
        return bool(dist._contains(dist.to_internal_repr(value)))
    except (ValueError, TypeError):
        return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def read_study_trials(
    storage_url: str, study_name: str
) -> tuple[Sequence[TrialView], dict[str, Any]]:
    """(trials, study user attributes) of an existing study, for reading only: straight
    from the SQL tables where possible, through Optuna otherwise.

    Raises:
        SpecError: the storage cannot be opened or holds no such study.
    """
    from tbxsweep.study._fastread import read_trials

    if storage_url.startswith("sqlite:///") and not Path(storage_url[10:]).exists():
        raise SpecError(msg.no_study(study_name, redact_url(storage_url)))
    try:
        return read_trials(storage_url, study_name)
    except LookupError:
        study = load_existing_study(storage_url, study_name)
        return study.get_trials(deepcopy=False), dict(study.user_attrs)


def load_existing_study(storage_url: str, study_name: str) -> optuna.Study:
    """An existing study, for reading (leaderboard, check).

    Raises:
        SpecError: the storage cannot be opened or holds no such study.
    """
    import optuna

    _quiet_optuna()
    try:
        storage = _get_storage(storage_url)
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        raise SpecError(msg.no_study(study_name, redact_url(storage_url))) from None
    except Exception as exc:  # any driver error means the same to the user
        why = redact_text(_first_line(exc), storage_url)
        raise SpecError(msg.cannot_open(redact_url(storage_url), why)) from None
