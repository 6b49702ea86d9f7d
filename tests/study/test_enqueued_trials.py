"""`study.enqueue` on a real SQLite study: known configurations run first, in order, as
ordinary trials; a resume or a second orchestrator does not queue them again."""

from __future__ import annotations

import csv
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import optuna
from conftest import cli_env
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from tbxsweep.schedule import run_sweep
from tbxsweep.spec import load_spec
from tbxsweep.study import ENQUEUED_ATTR, enqueue_known, open_study, queued_known

SPACE = {
    "x": {"type": "float", "low": 0.0, "high": 1.0},
    "y": {"type": "int", "low": 0, "high": 10, "step": 2},
    "c": {"type": "categorical", "choices": ["a", "b", "z"]},
}
# The second and third are partial: the sampler fills y and c, or x.
KNOWN = [{"x": 0.25, "y": 4, "c": "z"}, {"x": 0.75}, {"y": 8, "c": "a"}]


def _spec(make_spec: Any, n_trials: int, enqueue: list[dict[str, Any]] = KNOWN) -> Path:
    return make_spec(
        study={"n_trials": n_trials, "enqueue": enqueue},
        search_space=SPACE,
        resources={"gpus": "none", "n_jobs": 2},
    )


def _study(out: Path) -> optuna.Study:
    return optuna.load_study(study_name="fake", storage=f"sqlite:///{out / 'study.db'}")


def _in_space(params: dict[str, Any]) -> bool:
    return 0.0 <= params["x"] <= 1.0 and params["y"] in range(0, 11, 2) and params["c"] in "abz"


def test_enqueued_configurations_run_first_in_order_as_ordinary_trials(make_spec, tmp_path):
    out = tmp_path / "out"
    events: list[tuple[str, Any]] = []
    counts = run_sweep(
        load_spec(_spec(make_spec, 5)), on_event=lambda kind, info: events.append((kind, info))
    )
    assert counts.complete == 5
    assert [info for kind, info in events if kind == "enqueued"] == [{"queued": 3, "given": 3}]
    trials = sorted(_study(out).trials, key=lambda t: t.number)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 5
    assert [t.user_attrs.get(ENQUEUED_ATTR) for t in trials] == [0, 1, 2, None, None]
    # In order, each key given kept exactly, the others drawn from the search space.
    assert trials[0].params == {"x": 0.25, "y": 4, "c": "z"}
    assert trials[1].params["x"] == 0.75
    assert (trials[2].params["y"], trials[2].params["c"]) == (8, "a")
    assert all(_in_space(t.params) for t in trials)
    # Ordinary trials: seeded by their number, a TensorBoard run, a leaderboard row.
    for t in trials:
        assert t.user_attrs["tbxsweep"]["seeds"] == [t.number]
        assert (out / f"trial-{t.number:04d}").is_dir()
    with open(out / "leaderboard.csv", newline="") as fh:
        rows = {int(r["trial"]): r for r in csv.DictReader(fh)}
    assert sorted(rows) == [0, 1, 2, 3, 4]
    assert (rows[0]["x"], rows[0]["y"], rows[0]["c"]) == ("0.25", "4", "z")
    assert float(rows[0]["value"]) == trials[0].value


def test_a_resume_does_not_queue_them_again(make_spec, tmp_path, run_cli):
    path = _spec(make_spec, 3)
    run_sweep(load_spec(path), on_event=lambda kind, info: None)
    # The same spec, started again with more trials: the sampler's own come next.
    again = run_cli("start", str(path), "--set", "study.n_trials=5")
    assert again.returncode == 0, again.stderr[-2000:]
    assert (
        "study.enqueue: 0 of 3 known configuration(s) run first (3 in the study already)\n"
        in again.stdout
    )
    trials = sorted(_study(tmp_path / "out").trials, key=lambda t: t.number)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 5
    assert [t.user_attrs.get(ENQUEUED_ATTR) for t in trials] == [0, 1, 2, None, None]


def test_a_configuration_the_study_already_holds_is_not_queued(make_spec, tmp_path):
    """Run (in any state, by the sampler or enqueued), or queued by an earlier start: the
    rule of Optuna's skip_if_exists, with 1 in the YAML for a float equal to a stored 1.0."""
    spec = load_spec(
        _spec(make_spec, 6, [{"x": 1, "y": 2, "c": "a"}, {"x": 0.5}, {"y": 6}, {"c": "b"}])
    )
    dists = {
        "x": FloatDistribution(0.0, 1.0),
        "y": IntDistribution(0, 10, step=2),
        "c": CategoricalDistribution(["a", "b", "z"]),
    }
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="fake", storage=url, direction="maximize")
    # The first entry was drawn by the sampler once and failed; {x: 0.5} was enqueued and
    # ran (its fixed_params decide, not its full params).
    study.add_trial(
        create_trial(
            params={"x": 1.0, "y": 2, "c": "a"}, distributions=dists, state=TrialState.FAIL
        )
    )
    study.enqueue_trial({"x": 0.5})
    trial = study.ask(dists)
    study.tell(trial, 0.5)
    assert enqueue_known(study, spec) == 2
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [(t.system_attrs["fixed_params"], t.user_attrs) for t in waiting] == [
        ({"y": 6}, {ENQUEUED_ATTR: 2}),
        ({"c": "b"}, {ENQUEUED_ATTR: 3}),
    ]
    assert queued_known(study.get_trials()) == 2
    assert enqueue_known(study, spec) == 0
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 2


# Two orchestrators open one study at once; each waits 1 s between reading the study's
# trials and queueing, so that without the study lock both would find none and queue all.
_OPEN = textwrap.dedent(
    """
    import os, sys, time
    import optuna
    from tbxsweep.spec import load_spec
    from tbxsweep.study import distributions, open_study

    real = optuna.Study.enqueue_trial

    def slow(self, *args, **kwargs):
        time.sleep(1.0)
        return real(self, *args, **kwargs)

    optuna.Study.enqueue_trial = slow
    spec = load_spec(sys.argv[1])
    # Past its imports: wait for the other one, then both open the study at once.
    open(os.path.join(sys.argv[3], str(os.getpid())), "w").close()
    while len(os.listdir(sys.argv[3])) < 2:
        time.sleep(0.01)
    open_study(spec, sys.argv[2], dists=distributions(spec), create=True)
    """
)


def test_two_orchestrators_opening_the_study_at_once_queue_each_configuration_once(
    make_spec, tmp_path
):
    path = _spec(make_spec, 5)
    url = f"sqlite:///{tmp_path / 'out' / 'study.db'}"
    (tmp_path / "out").mkdir()
    (tmp_path / "ready").mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _OPEN, str(path), url, str(tmp_path / "ready")],
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err[-2000:]
    study = _study(tmp_path / "out")
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.system_attrs["fixed_params"] for t in waiting] == KNOWN
    assert study.user_attrs["tbxsweep_starts"] == 2


def test_open_study_queues_them_ahead_of_the_sampler(make_spec, tmp_path):
    spec = load_spec(_spec(make_spec, 5))
    dists = {
        "x": FloatDistribution(0.0, 1.0),
        "y": IntDistribution(0, 10, step=2),
        "c": CategoricalDistribution(["a", "b", "z"]),
    }
    study = open_study(spec, f"sqlite:///{tmp_path / 'study.db'}", dists=dists)
    asked = [study.ask(dists) for _ in range(4)]
    assert [t.number for t in asked] == [0, 1, 2, 3]
    assert asked[0].params == KNOWN[0]
    assert asked[1].params["x"] == 0.75
    assert (asked[2].params["y"], asked[2].params["c"]) == (8, "a")
    assert "fixed_params" not in study.trials[3].system_attrs
