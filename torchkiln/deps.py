"""What a stage's config makes it depend on: local files it reads and other pipelines' outputs.

Found by walking the validated config, so a plugin's component gets DVC dependencies
just by typing a field `LocalPath` or by holding an `ArtifactRef` (or offering
`artifact_ref()`, as build_model's `weights:` does).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

from torchkiln.schemas.fields import ArtifactRef, LocalPathMarker

Loc = tuple[str | int, ...]


def _walk(value: Any, loc: Loc) -> Iterator[tuple[Loc, Any, bool]]:
    """Yield (loc, value, is_local_path) for every nested value."""
    if isinstance(value, BaseModel):
        for name, info in type(value).model_fields.items():
            child = getattr(value, name)
            is_path = any(isinstance(m, LocalPathMarker) for m in info.metadata)
            yield (*loc, name), child, is_path and isinstance(child, str)
            yield from _walk(child, (*loc, name))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _walk(item, (*loc, i))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, (*loc, key))


def local_paths(config: BaseModel) -> list[tuple[Loc, str]]:
    """Every `LocalPath` field with a value: (location, path)."""
    return [(loc, value) for loc, value, is_path in _walk(config, ()) if is_path]


def artifact_refs(config: BaseModel) -> list[tuple[Loc, ArtifactRef]]:
    """Every reference to another pipeline's stage output: (location, reference)."""
    found = []
    for loc, value, _ in _walk(config, ()):
        if isinstance(value, ArtifactRef):
            found.append((loc, value))
        elif isinstance(value, BaseModel) and hasattr(value, "artifact_ref"):
            ref = value.artifact_ref()
            if ref is not None:
                found.append((loc, ref))
    return found


def walk_values(config: BaseModel) -> Iterator[Any]:
    """Every value nested in a config (components included)."""
    for _, value, _ in _walk(config, ()):
        yield value
