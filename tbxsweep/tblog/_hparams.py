"""The hparams plugin records, built by hand so each trial is exactly one row.

tensorboardX's `add_hparams` writes a child run per call and always reports success;
instead the experiment (with domains) is written once at the sweep's root and each
trial's own run gets a session-start and, once, a session-end record.
"""

from __future__ import annotations

import math
from enum import IntEnum
from typing import Any

from google.protobuf import struct_pb2
from tensorboardX.proto import api_pb2, plugin_hparams_pb2
from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata

from tbxsweep.spec import CategoricalParam, IntParam, Spec

PLUGIN_NAME = "hparams"
PLUGIN_DATA_VERSION = 0
EXPERIMENT_TAG = "_hparams_/experiment"
SESSION_START_INFO_TAG = "_hparams_/session_start_info"
SESSION_END_INFO_TAG = "_hparams_/session_end_info"


# The `state` metric column: the HParams tab has no "pruned" status, so this value lets the
# tab filter trials by how they ended (metric filter: min 2, max 2 shows the pruned ones).
STATE_CODES = {"RUNNING": 0, "COMPLETE": 1, "PRUNED": 2, "FAIL": 3, "INFEASIBLE": 4}
STATE_DISPLAY = "state (0 running, 1 complete, 2 pruned, 3 failed, 4 infeasible)"
# A multi-objective study's `pareto` metric column: the trial's front rank (0 = on the
# Pareto front), written into each completed trial's run when the sweep ends (the rank
# of a trial changes as later trials finish). Filter min 0, max 0 to see the front.
PARETO_TAG = "pareto"
PARETO_DISPLAY = "pareto front rank (0 = on the front)"


class HParamsStatus(IntEnum):
    UNKNOWN = api_pb2.STATUS_UNKNOWN
    SUCCESS = api_pb2.STATUS_SUCCESS
    FAILURE = api_pb2.STATUS_FAILURE
    RUNNING = api_pb2.STATUS_RUNNING


def plain_value(value: Any) -> bool | int | float | str:
    """A value TensorBoard can show: numpy scalars and None become plain Python types."""
    if value is None:
        return "None"
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def metric_columns(spec: Spec) -> list[tuple[str, str, int]]:
    """(tag, display name, dataset type) of every HParams metric column, in display order."""
    m = spec.study.metric
    val = api_pb2.DATASET_VALIDATION
    train = api_pb2.DATASET_TRAINING
    cols: list[tuple[str, str, int]] = [
        (f"best/{m}", f"{m} (best)", val),
        (m, f"{m} (last)", val if m.startswith("val_") else train),
    ]
    if spec.task.train is None:
        for tag, ds in (
            ("val_loss", val),
            ("val_accuracy", val),
            ("loss", train),
            ("accuracy", train),
        ):
            if tag != m:
                cols.append((tag, f"{tag} (last)", ds))
        cols.append(("trainable_params", "trainable params", api_pb2.DATASET_UNKNOWN))
        if spec.test_top_k:  # held out: only the best trials, evaluated once at the end
            cols += [
                ("test/accuracy", "test accuracy (held out, best trials)", api_pb2.DATASET_UNKNOWN),
                ("test/loss", "test loss (held out, best trials)", api_pb2.DATASET_UNKNOWN),
            ]
    cols += objective_columns(spec)
    cols += [
        ("epochs_run", "epochs run", api_pb2.DATASET_UNKNOWN),
        ("duration_s", "seconds", api_pb2.DATASET_UNKNOWN),
        ("state", STATE_DISPLAY, api_pb2.DATASET_UNKNOWN),
    ]
    return cols


def objective_columns(spec: Spec) -> list[tuple[str, str, int]]:
    """A multi-objective study's columns: every objective's value as told to the study
    (`objective/<name>`, the first objective's best epoch), then the Pareto front rank."""
    goals = spec.study.goals
    if len(goals) < 2:
        return []
    unknown = api_pb2.DATASET_UNKNOWN
    return [
        *(
            (f"objective/{g.name}", f"{g.name} (objective {i}, {g.direction})", unknown)
            for i, g in enumerate(goals, start=1)
        ),
        (PARETO_TAG, PARETO_DISPLAY, unknown),
    ]


def _summary(tag: str, data: plugin_hparams_pb2.HParamsPluginData) -> Summary:
    meta = SummaryMetadata(
        plugin_data=SummaryMetadata.PluginData(
            plugin_name=PLUGIN_NAME, content=data.SerializeToString()
        )
    )
    return Summary(value=[Summary.Value(tag=tag, metadata=meta)])


def _high(p: IntParam) -> int:
    """An int parameter's upper bound: `high: max` is resolved before any record is written
    (`spec.resolve_space`, the one place that knows the base model's depth)."""
    if p.high == "max":
        raise ValueError("`high: max` must be resolved first (spec.resolve_space)")
    return int(p.high)


def shown_as_text(p: Any) -> bool:
    """Whether a parameter goes to TensorBoard as text: categorical choices and small
    non-negative integer ranges read as "16" and "3" rather than "16.000" and "3.0000",
    and keep a discrete filter; they still sort correctly (one digit) or are categorical."""
    if isinstance(p, CategoricalParam):
        return not all(isinstance(c, bool) for c in p.choices)
    if isinstance(p, IntParam):
        return not p.log and p.low >= 0 and _high(p) <= 9
    return False


def _int_values(p: IntParam) -> list[int]:
    return list(range(p.low, _high(p) + 1, p.step))


def _hparam_info(key: str, p: Any) -> api_pb2.HParamInfo:
    info = api_pb2.HParamInfo(name=key, display_name=key)
    if shown_as_text(p):
        values = p.choices if isinstance(p, CategoricalParam) else _int_values(p)
        info.type = api_pb2.DATA_TYPE_STRING
        info.domain_discrete.values.extend(struct_pb2.Value(string_value=str(v)) for v in values)
    elif isinstance(p, CategoricalParam):  # all booleans
        info.type = api_pb2.DATA_TYPE_BOOL
        info.domain_discrete.values.extend(struct_pb2.Value(bool_value=bool(c)) for c in p.choices)
    elif isinstance(p, IntParam):
        info.type = api_pb2.DATA_TYPE_FLOAT64
        info.domain_interval.min_value = p.low
        info.domain_interval.max_value = float(_high(p))
    else:
        info.type = api_pb2.DATA_TYPE_FLOAT64
        info.domain_interval.min_value = p.low
        info.domain_interval.max_value = p.high
    return info


def experiment_summary(spec: Spec, created: float) -> Summary:
    """The experiment: every search-space key with its domain, then the metric columns."""
    exp = api_pb2.Experiment(name=spec.study.name, time_created_secs=created)
    exp.description = f"tbxsweep study {spec.study.name!r}: " + ", ".join(
        f"{g.direction} {g.name}" for g in spec.study.goals
    )
    for key, p in spec.search_space.items():
        exp.hparam_infos.append(_hparam_info(key, p))
    for tag, display, dataset in metric_columns(spec):
        exp.metric_infos.append(
            api_pb2.MetricInfo(
                name=api_pb2.MetricName(group="", tag=tag),
                display_name=display,
                dataset_type=dataset,
            )
        )
    return _summary(
        EXPERIMENT_TAG,
        plugin_hparams_pb2.HParamsPluginData(version=PLUGIN_DATA_VERSION, experiment=exp),
    )


def session_start_summary(
    spec: Spec, params: dict[str, Any], group: str, start_time: float
) -> Summary:
    """A trial's session start: its hparams values, its group and its start time."""
    ssi = plugin_hparams_pb2.SessionStartInfo(group_name=group, start_time_secs=start_time)
    for key, value in params.items():
        p = spec.search_space.get(key)
        v = plain_value(value)
        if p is not None and shown_as_text(p):
            v = str(v)
        if isinstance(v, bool):
            ssi.hparams[key].bool_value = v
        elif isinstance(v, (int, float)):
            ssi.hparams[key].number_value = float(v) if math.isfinite(float(v)) else 0.0
        else:
            ssi.hparams[key].string_value = v
    return _summary(
        SESSION_START_INFO_TAG,
        plugin_hparams_pb2.HParamsPluginData(version=PLUGIN_DATA_VERSION, session_start_info=ssi),
    )


def session_end_summary(status: HParamsStatus, end_time: float) -> Summary:
    sei = plugin_hparams_pb2.SessionEndInfo(status=int(status), end_time_secs=end_time)
    return _summary(
        SESSION_END_INFO_TAG,
        plugin_hparams_pb2.HParamsPluginData(version=PLUGIN_DATA_VERSION, session_end_info=sei),
    )
