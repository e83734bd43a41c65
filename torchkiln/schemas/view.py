"""The spec as it runs, each value with where it came from: what `kiln show` prints and
`kiln report` shows. A value was written at a file, line and column (through `extends:`
perhaps), or it is a default."""

from __future__ import annotations

from typing import Any

from torchkiln.schemas.spec import Pipeline
from torchkiln.schemas.yaml_source import Loc, YamlDocument


def resolved(pipeline: Pipeline) -> dict[str, Any]:
    """The spec as it runs: the top-level keys and every stage's validated settings."""
    out: dict[str, Any] = {"name": pipeline.name}
    extends = pipeline.doc.data.get("extends")
    if extends is not None:
        out["extends"] = extends
    canonical = pipeline.canonical()
    for key in ("task", "seed", "device", "deterministic"):
        out[key] = canonical[key]
    out["plugins"] = [p.entry for p in pipeline.plugins]
    out["stages"] = canonical["stages"]
    return out


def origin(doc: YamlDocument, loc: Loc) -> dict[str, Any] | None:
    """Where a value was written (None: a default)."""
    written = doc.written(loc)
    if written is None:
        return None
    return {
        "file": written.file or doc.file,
        "line": written.line,
        "col": written.col,
        "via": list(written.via),
    }


def origin_text(found: dict[str, Any] | None) -> str:
    if found is None:
        return "default"
    text = f"{found['file']}:{found['line']}:{found['col']}"
    if found["via"]:
        text += f" (via extends at {', '.join(found['via'])})"
    return text


def leaf(value: Any) -> bool:
    """A value shown on one line: a scalar, a list of scalars, an empty mapping or list."""
    if isinstance(value, dict):
        return not value
    if isinstance(value, list):
        return all(not isinstance(v, dict | list) for v in value)
    return True


def leaves(value: Any, doc: YamlDocument, loc: Loc = ()) -> list[dict[str, Any]]:
    if leaf(value):
        return [{"path": list(loc), "value": value, "origin": origin(doc, loc)}]
    pairs = value.items() if isinstance(value, dict) else enumerate(value)
    return [entry for key, child in pairs for entry in leaves(child, doc, (*loc, key))]
