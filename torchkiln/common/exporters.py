"""Export formats. Each export is loaded back and compared with the eager model."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, PositiveFloat

from torchkiln.registry import ExporterConfig, exporters


@exporters.register
class TorchScript(ExporterConfig):
    """TorchScript (`torch.jit`), loadable with `torch.jit.load` and no torchkiln installed."""

    name: Literal["torchscript"] = "torchscript"
    method: Literal["trace", "script"] = "trace"
    """Trace with the example batch, or compile the Python source with `torch.jit.script`."""

    def export(self, target: Any, out_dir: Any) -> dict[str, Any]:
        from torchkiln.runtime.exporting import export_torchscript

        return export_torchscript(self, target, out_dir)


@exporters.register
class Onnx(ExporterConfig):
    """ONNX with dynamic batch (and sequence) axes, checked with onnxruntime."""

    name: Literal["onnx"] = "onnx"
    opset: Annotated[int, Field(ge=17, le=23)] | None = None
    """ONNX opset version (default: the exporter's choice)."""

    def export(self, target: Any, out_dir: Any) -> dict[str, Any]:
        from torchkiln.runtime.exporting import export_onnx

        return export_onnx(self, target, out_dir)


@exporters.register
class Safetensors(ExporterConfig):
    """The weights as safetensors, plus the architecture config to rebuild the model."""

    name: Literal["safetensors"] = "safetensors"
    tolerance: PositiveFloat = 1e-6
    """Largest allowed absolute difference from the eager model's outputs."""

    def export(self, target: Any, out_dir: Any) -> dict[str, Any]:
        from torchkiln.runtime.exporting import export_safetensors

        return export_safetensors(self, target, out_dir)
