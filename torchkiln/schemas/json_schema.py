"""The JSON Schema of the spec language, including every registered component.

Editors use it through a first line `# yaml-language-server: $schema=<path>` in a spec;
`kiln schema -o FILE` writes it. It mirrors validation: a stage key that names a stage
kind (or a task's default for that key) takes that kind's settings; any other key must
say `uses:`.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from torchkiln import __version__
from torchkiln.registry import kinds
from torchkiln.schemas.fields import STAGE_NAME_PATTERN
from torchkiln.schemas.spec import PipelineHeader


def spec_json_schema() -> dict[str, Any]:
    """Build the schema from the registries as they are now (load plugins first)."""
    stage_kinds = [cls for _, cls in kinds.stages]
    models = [(PipelineHeader, "validation"), *[(k.config, "validation") for k in stage_kinds]]
    refs, top = models_json_schema(models, ref_template="#/$defs/{model}")
    defs: dict[str, Any] = top["$defs"]

    def ref_of(model: Any) -> str:
        return refs[(model, "validation")]["$ref"]

    root = defs.pop(ref_of(PipelineHeader).rsplit("/", 1)[-1])
    by_key: dict[str, list[str]] = {k.name: [ref_of(k.config)] for k in stage_kinds}
    for _, task in kinds.tasks:
        for key, kind_name in task.stage_defaults.items():
            by_key.setdefault(key, []).append(ref_of(kinds.stages.get(kind_name).config))
    # `train:` with nothing under it means "all defaults", hence null.
    properties = {
        key: {"anyOf": [*({"$ref": t} for t in targets), {"type": "null"}]}
        for key, targets in sorted(by_key.items())
    }
    with_uses = [
        {
            "allOf": [{"$ref": ref_of(k.config)}],
            "properties": {"uses": {"const": k.name}},
            "required": ["uses"],
        }
        for k in stage_kinds
    ]
    root["properties"]["stages"] = {
        "type": "object",
        "description": root["properties"]["stages"].get("description", ""),
        "minProperties": 1,
        "propertyNames": {"pattern": STAGE_NAME_PATTERN},
        "properties": properties,
        "additionalProperties": {"oneOf": with_uses},
    }
    root["required"] = ["stages"]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://torchkiln.dev/schema/{__version__}/pipeline.json",
        "title": "torchkiln pipeline spec",
        **root,
        "$defs": defs,
    }
