"""Human-readable descriptions of registries and config models, for `kiln list`."""

from __future__ import annotations

import types
import typing
from typing import Any

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from torchkiln.registry.component import registered
from torchkiln.registry.registry import Registry, choices_text
from torchkiln.stages.base import StageKind

_BOUNDS = ((at.Gt, ">", "gt"), (at.Ge, ">=", "ge"), (at.Lt, "<", "lt"), (at.Le, "<=", "le"))


def type_text(tp: Any, metadata: list[Any] | None = None) -> str:
    """`int >= 1`, `list[float]`, `'cos' | 'linear'`, `optimizer` (a registered component)."""
    metadata = list(metadata or [])
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return type_text(args[0], [*metadata, *args[1:]])
    for marker in metadata:
        if isinstance(marker, registered):
            return marker.registry.kind
    if origin is typing.Literal:
        text = " | ".join(repr(a) for a in args)
    elif origin in (typing.Union, types.UnionType):
        text = " | ".join(type_text(a) for a in args if a is not type(None))
        if type(None) in args:
            text += " | null"
        return text
    elif origin in (list, dict):
        text = f"{origin.__name__}[{', '.join(type_text(a) for a in args)}]"
    elif isinstance(tp, type):
        text = "null" if tp is type(None) else tp.__name__
    else:
        text = str(tp)
    bounds = []
    for item in metadata:
        for cls, symbol, attr in _BOUNDS:
            if isinstance(item, cls):
                bounds.append(f"{symbol} {getattr(item, attr)}")
        if isinstance(item, at.MinLen) and item.min_length:
            bounds.append(f"len >= {item.min_length}")
        if isinstance(item, at.MaxLen):
            bounds.append(f"len <= {item.max_length}")
        pattern = getattr(item, "pattern", None)
        if pattern:
            bounds.append(f"matching {pattern}")
    return f"{text} {' '.join(bounds)}".strip()


def default_text(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    if isinstance(value, BaseModel) and "name" in type(value).model_fields:
        value = value.name  # type: ignore[attr-defined]
    elif isinstance(value, BaseModel):
        value = value.model_dump(mode="json", exclude_defaults=True)
    elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
        value = [v.name if hasattr(v, "name") else v.model_dump(mode="json") for v in value]
    return "= " + _yamlish(value)


def _yamlish(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(_yamlish(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yamlish(v)}" for k, v in value.items()) + "}"
    return str(value)


def fields_text(
    model: type[BaseModel], indent: str, skip: tuple[str, ...] = ("name",)
) -> list[str]:
    lines = []
    for field, info in model.model_fields.items():
        if field in skip:
            continue
        head = f"{indent}{field}: {type_text(info.annotation, info.metadata)} {default_text(info)}"
        lines.append(head)
        if info.description:
            lines.append(f"{indent}    {' '.join(info.description.split())}")
    return lines


def registry_text(registry: Registry[Any], verbose: bool = True) -> str:
    lines = [f"{registry.kind}: {registry.doc}"]
    for name, entry in registry:
        summary = entry.summary()
        lines.append(f"  {name:<22} {summary}")
        if not verbose:
            continue
        config = entry
        if isinstance(entry, type) and issubclass(entry, StageKind):
            config = entry.config  # a stage kind carries its config model
            takes = ", ".join(
                f"{slot} ({s.artifact}{', optional' if s.optional else ''})"
                for slot, s in entry.consumes.items()
            )
            lines.append(f"      takes: {takes or '(nothing)'}; makes: {entry.produces}")
        if isinstance(config, type) and issubclass(config, BaseModel):
            lines.extend(fields_text(config, "      ", skip=("name", "uses", "inputs")))
    generic = registry.generic_names()
    if generic:
        lines.append(
            f"  any other by name, through the generic adapter: {choices_text(generic, limit=100)}"
        )
    return "\n".join(lines)
