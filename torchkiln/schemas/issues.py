"""Turn Pydantic validation errors into positioned, actionable one-line issues."""

from __future__ import annotations

import re
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from torchkiln.errors import Issue
from torchkiln.registry.component import registered
from torchkiln.registry.registry import UnknownNameError, choices_text, did_you_mean
from torchkiln.schemas.yaml_source import Loc, YamlDocument

#: Error types whose message already says everything (suggestions included).
_SELF_EXPLAINING = {"unknown_name", "unknown_param", "missing", "missing_name", "value_error"}


def render_value(value: Any) -> str:
    """A short YAML-flavoured rendering of a value for `(got ...)`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _unwrap(tp: Any, metadata: list[Any]) -> tuple[Any, list[Any]]:
    """Strip Annotated and Optional, keeping the Annotated metadata."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp, *extra = typing.get_args(tp)
            metadata = [*metadata, *extra]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
                return (models[0] if len(models) == 1 else None), metadata
            tp = args[0]
        else:
            return tp, metadata


def _model_for(tp: Any, metadata: list[Any], value: Any) -> type[BaseModel] | None:
    tp, metadata = _unwrap(tp, metadata)
    for marker in metadata:
        if isinstance(marker, registered):
            name = value.get("name") if isinstance(value, dict) else value
            if isinstance(name, str):
                try:
                    return marker.registry.get(name)
                except UnknownNameError:
                    return None
            return None
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def keys_at(root: type[BaseModel], data: Any, loc: Loc) -> list[str] | None:
    """The keys the model at `loc` (inside `data`, validated by `root`) accepts, if knowable."""
    model: type[BaseModel] | None = root
    tp: Any = None
    metadata: list[Any] = []
    value = data
    for part in loc:
        if model is not None:
            if not isinstance(part, str) or part not in model.model_fields:
                return None
            info = model.model_fields[part]
            tp, metadata = info.annotation, list(info.metadata)
        else:
            tp, metadata = _unwrap(tp, metadata)
            origin, args = typing.get_origin(tp), typing.get_args(tp)
            if origin is list and isinstance(part, int):
                tp, metadata = args[0], []
            elif origin is dict and isinstance(part, str):
                tp, metadata = args[1], []
            else:
                return None
        value = (
            value.get(part)
            if isinstance(value, dict)
            else (
                value[part]
                if isinstance(value, list) and isinstance(part, int) and part < len(value)
                else None
            )
        )
        model = _model_for(tp, metadata, value)
    return sorted(model.model_fields) if model is not None else None


def _value_at(data: Any, loc: Loc) -> Any:
    for part in loc:
        in_list = isinstance(data, list) and isinstance(part, int) and part < len(data)
        if not (in_list or (isinstance(data, dict) and part in data)):
            return None
        data = data[part]
    return data


def _expected_literals(error: dict[str, Any]) -> list[str]:
    expected = (error.get("ctx") or {}).get("expected", "")
    return re.findall(r"'([^']*)'", str(expected))


def issues_from(
    exc: ValidationError, doc: YamlDocument, prefix: Loc, model: type[BaseModel], data: Any
) -> list[Issue]:
    """One `Issue` per Pydantic error, positioned in `doc`; `prefix` locates `data` in the file."""
    issues = []
    for error in exc.errors(include_url=False):
        loc: Loc = tuple(error["loc"])
        full = (*prefix, *loc)
        kind, message, value = error["type"], error["msg"], error.get("input")
        if len(loc) >= 2 and loc[-1] == "[key]":  # a mapping key is invalid (a stage name)
            parent = _value_at(data, loc[:-2])
            # Pydantic writes a `null` or `1.5` key as a string; find the key as it was loaded.
            keys = list(parent) if isinstance(parent, dict) else []
            found = [k for k in keys if str(k) == str(loc[-2])]
            key_loc = (*prefix, *loc[:-2], found[0] if found else loc[-2])
            message = f"invalid key {render_value(value)}: {message}"
            issues.append(doc.issue(key_loc, message, key=True))
            continue
        if kind == "extra_forbidden":
            allowed = keys_at(model, data, loc[:-1]) or []
            key = str(loc[-1])
            message = f"unknown key {key!r}; {did_you_mean(key, allowed)}" + (
                f"valid keys: {choices_text(allowed)}" if allowed else ""
            )
            issues.append(doc.issue(full, message.rstrip("; "), key=True))
            continue
        if kind == "missing":
            message = f"missing required key {loc[-1]!r}" if loc else message
            issues.append(doc.issue(full, message))
            continue
        if kind == "literal_error":
            hint = did_you_mean(str(value), _expected_literals(error)).rstrip()
            message = f"{message} (got {render_value(value)})" + (f"; {hint}" if hint else "")
            issues.append(doc.issue(full, message))
            continue
        if kind.startswith(("value_error", "assertion_error")):
            message = re.sub(r"^(Value|Assertion) error, ", "", message)
        elif kind not in _SELF_EXPLAINING:
            message = f"{message} (got {render_value(value)})"
        issues.append(doc.issue(full, message))
    return issues
