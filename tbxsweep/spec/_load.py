"""Read a sweep spec from YAML, apply `--set` overrides, validate, report every problem."""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Tag, ValidationError
from pydantic_core import ErrorDetails

from tbxsweep.errors import SpecError, did_you_mean
from tbxsweep.spec import _messages as msg
from tbxsweep.spec._model import CategoricalParam, FloatParam, IntParam, Spec


class SpecLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that reads numbers as YAML 1.2 does.

    YAML 1.1 (PyYAML's schema) takes `1e-3`, `3E4` and `1.0e3` for strings: a float needs
    a dot and a signed exponent there. People write learning rates as `1e-3`, so a spec
    file and every `--set` value are read with this loader.
    """


# Added after PyYAML's own resolvers: integers still resolve as integers first.
SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$"),
    list("-+0123456789."),
)


def _parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=SpecLoader)  # a SafeLoader: no arbitrary objects


def load_spec(path: str | Path, overrides: tuple[str, ...] | list[str] = ()) -> Spec:
    """Load, override and validate a sweep spec.

    Args:
        path: the YAML file.
        overrides: `dotted.path=value` strings; values are parsed as YAML scalars.

    Raises:
        SpecError: with one line per problem, each prefixed with the file name.
    """
    where = str(path)
    raw = _read_yaml(Path(path))
    problems: list[str] = []
    for item in overrides:
        problem = _apply_override(raw, item)
        if problem:
            problems.append(f"{where}: --set {item}: {problem}")
    if problems:
        raise SpecError(problems)
    return validate_spec(raw, where)


def validate_spec(raw: Any, where: str) -> Spec:
    """Validate an already-parsed spec mapping; `where` prefixes every message."""
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: the spec must be a mapping of sections, got {_kind(raw)}")
    try:
        return Spec.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            for line in _problem_lines(err, raw):
                lines.append(f"{where}: {line}")
        raise SpecError(_dedupe(lines)) from None


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such spec file") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a directory, not a spec file") from None
    except PermissionError:
        raise SpecError(f"{path}: cannot be read (permission denied)") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: is not UTF-8 text") from None
    try:
        raw = _parse_yaml(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        what = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        raise SpecError(f"{path}{at}: YAML syntax error: {what}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: YAML error: {' '.join(str(exc).split())}") from None
    if raw is None:
        raise SpecError(f"{path}: the spec is empty")
    return raw


def _apply_override(raw: Any, item: str) -> str | None:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        return "must look like 'section.key=value'"
    try:
        value = _parse_yaml(text) if text.strip() else None
    except yaml.YAMLError:
        return f"the value {text!r} is not a YAML scalar"
    parts = key.strip().split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node, dict):
            return f"{'.'.join(parts[:i])} is not a mapping"
        node = node.setdefault(part, {})
    if not isinstance(node, dict):
        return f"{'.'.join(parts[:-1])} is not a mapping"
    node[parts[-1]] = value
    return None


def _problem_lines(err: ErrorDetails, raw: Any) -> list[str]:
    loc = _clean_loc(err["loc"], raw)
    path = msg.yaml_path(*loc)
    kind = err["type"]
    got = err.get("input")
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        parent = msg.yaml_path(*loc[:-1])
        key = str(loc[-1])
        # The raw location still names the member of a tagged union (task.dataset, the
        # type of a search-space entry): that member's keys, not every member's.
        allowed = _allowed_keys(tuple(err["loc"][:-1])) or _allowed_keys(loc[:-1])
        hint = did_you_mean(key, allowed)
        scope = f"{parent}: " if parent else ""
        return [
            f"{scope}unknown key {key!r}{hint}"
            + (f"; allowed: {', '.join(allowed)}" if not hint and allowed else "")
        ]
    if kind == "value_error" and not path:
        return str(ctx.get("error", err["msg"])).strip().split("\n")
    if kind == "missing":
        return [f"{path}: is required"]
    if kind in ("literal_error", "enum"):
        expected = ctx.get("expected", "")
        hint = ""
        if isinstance(got, str):
            options = [o.strip().strip("'") for o in expected.replace(" or ", ", ").split(",")]
            hint = did_you_mean(got, [o for o in options if o])
        return [f"{path}: must be one of {expected}, got {got!r}{hint}"]
    if kind == "union_tag_invalid":
        return [
            f"{path}.type: must be one of 'float', 'int', 'categorical', got {ctx.get('tag')!r}"
        ]
    if kind == "union_tag_not_found":
        return [f"{path}.type: is required ('float', 'int' or 'categorical')"]
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op = {
            "greater_than_equal": ">=",
            "greater_than": ">",
            "less_than_equal": "<=",
            "less_than": "<",
        }[kind]
        bound = next(iter(ctx.values()))
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        name = str(loc[-1]) if loc else "value"
        return [f"{path}: {msg.must_hold(f'{name} {op} {bound}', f'{name}={got!r}')}"]
    if kind == "too_short":
        return [f"{path}: must not be empty, got {got!r}"]
    if kind.endswith("_type") or kind.endswith("_parsing") or kind == "model_type":
        want = {
            "int": "an integer",
            "float": "a number",
            "bool": "true or false",
            "string": "a string",
            "model": "a mapping",
            "dict": "a mapping",
            "list": "a list",
        }
        base = kind.replace("_parsing", "").replace("_type", "").replace("_from_float", "")
        if kind == "model_type" or kind == "model_attributes_type":
            base = "model"
        return [f"{path}: must be {want.get(base, base)}, got {_kind(got)} {got!r}"]
    if kind == "value_error":
        text = str(ctx.get("error", err["msg"]))
        # A cross-field rule names its own key, e.g. "resources.scheduler: is required ...",
        # and a list's rule each item's ("study.enqueue[1]: ..."), one line per problem.
        if text.startswith((f"{path}.", f"{path}[", f"{path}:")):
            return text.split("\n")
        return [f"{path}: {text}"]
    return [f"{path}: {err['msg']}, got {got!r}"]


def _clean_loc(loc: tuple[Any, ...], raw: Any) -> tuple[str | int, ...]:
    """Drop pydantic's union-branch names ('float', 'int', 'list[...]') from an error path."""
    out: list[str | int] = []
    node = raw
    for part in loc:
        if (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and part < len(node)
        ):
            out.append(part)
            node = node[part]
        elif (
            isinstance(node, dict)
            and str(part) in ("float", "int", "categorical")
            and node.get("type") == part
        ) or (
            isinstance(part, str)
            and (
                "[" in part
                or part in ("bool", "int", "float", "str", "literal")
                or part.startswith("literal")
                or part.startswith("function")
            )
        ):
            continue
        else:
            out.append(part)
            node = None
    return tuple(out)


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    model: Any = Spec
    for part in loc:
        if model is None:
            return []
        if model is Spec and part == "search_space":
            model = "param"
            continue
        if model == "param":
            model = "param-entry"
            continue
        if model == "param-entry":  # this part is the entry's type
            model = _PARAM_TYPES.get(part)
            continue
        if isinstance(model, dict):  # a tagged union: this part is the member's tag
            model = model.get(part)
            continue
        field = (
            model.model_fields.get(part)
            if isinstance(model, type) and issubclass(model, BaseModel)
            else None
        )
        if field is None:
            return []
        ann = field.annotation
        model = _tagged_members(ann) or (
            ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        )
    if model == "param-entry":
        return ["type", "low", "high", "log", "step", "choices"]
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


_PARAM_TYPES = {"float": FloatParam, "int": IntParam, "categorical": CategoricalParam}


def _tagged_members(ann: Any) -> dict[str, Any]:
    """The members of a tagged union annotation by tag, e.g. {'dataset[npz]': NpzDataset}."""
    members: dict[str, Any] = {}
    for member in typing.get_args(ann):
        for meta in getattr(member, "__metadata__", ()):
            if isinstance(meta, Tag):
                members[meta.tag] = member.__origin__
    return members


def _kind(value: Any) -> str:
    return {
        dict: "a mapping",
        list: "a list",
        str: "the string",
        bool: "the boolean",
        int: "the integer",
        float: "the number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _dedupe(lines: list[str]) -> list[str]:
    seen: list[str] = []
    for line in lines:
        if line not in seen:
            seen.append(line)
    return seen
