"""export: TorchScript, ONNX and safetensors files, each checked against the eager model,
with a model card."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, field_validator

from torchkiln.common.exporters import Onnx, Safetensors, TorchScript
from torchkiln.registry import ExporterConfig, exporters, registered, stages
from torchkiln.stages.base import NO_FACTS, Facts, Slot, StageConfig, StageKind

if TYPE_CHECKING:  # pragma: no cover
    from torchkiln.runtime.context import StageContext


class ExportConfig(StageConfig):
    """Settings of an export stage."""

    formats: Annotated[
        list[Annotated[ExporterConfig, registered(exporters)]], Field(min_length=1)
    ] = Field(default_factory=lambda: [TorchScript(), Onnx(), Safetensors()])
    """Formats to write (`kiln list exporter`)."""
    check_batch: Annotated[int, Field(ge=1, le=1024)] = 8
    """Examples of the fixed batch each export is compared on."""

    @field_validator("formats")
    @classmethod
    def _each_format_once(cls, formats: list[Any]) -> list[Any]:
        names = [f.name for f in formats]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"{', '.join(twice)} listed more than once (each writes one file)")
        return formats


@stages.register
class Export(StageKind):
    """Export the trained model, verify every file against the eager model, write a model card."""

    name = "export"
    config = ExportConfig
    consumes = {
        "model": Slot("trained_model"),
        "dataset": Slot("dataset"),
        "transforms": Slot("transforms", optional=True),
        "evaluation": Slot("evaluation", optional=True),
    }
    produces = "export"
    reads = ("*",)  # the model card records the digest of the whole spec
    writes_metrics = True

    @classmethod
    def output_facts(cls, config: Any, inputs: Mapping[str, Facts]) -> Facts:
        return inputs.get("model", NO_FACTS)

    def run(self, ctx: StageContext) -> None:
        from torchkiln.runtime.export import run_export

        run_export(ctx)
