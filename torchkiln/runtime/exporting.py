"""Writing each export format, loading it back, and comparing it with the eager model.

An `ExportTarget` is what every format exports: a module with an explicit forward
signature (preprocessing included), example inputs for tracing and checking, input
names, and which axes are dynamic (batch; sequence length for text).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchkiln.errors import RunError
from torchkiln.io import atomic_write_bytes, sha256_file


@dataclass
class ExportTarget:
    module: nn.Module
    #: example inputs, batch first; the check also runs on a smaller batch
    example: tuple[torch.Tensor, ...]
    input_names: list[str]
    #: input name -> {axis: axis name}
    dynamic_axes: dict[str, dict[int, str]]
    output_names: list[str]
    #: rebuilds the eager module from a safetensors state dict (for the safetensors check)
    rebuild: Callable[[dict[str, torch.Tensor]], nn.Module]
    #: the state dict the safetensors file holds
    weights: dict[str, torch.Tensor]
    #: extra facts for the model card (e.g. a generator's latent size)
    card: dict[str, Any] = field(default_factory=dict)
    #: more input sets to compare on, beyond the example and half of it (e.g. shorter
    #: sequences, proving a text model's sequence axis is free)
    extra_checks: list[tuple[torch.Tensor, ...]] = field(default_factory=list)

    def inputs_at(self, batch: int) -> tuple[torch.Tensor, ...]:
        return tuple(x[:batch] for x in self.example)

    def check_inputs(self) -> list[tuple[torch.Tensor, ...]]:
        """Every input set an export is compared on."""
        return [self.inputs_at(n) for n in _batches(self)] + list(self.extra_checks)

    @torch.no_grad()
    def expected(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.module(*inputs).float()


def _check(name: str, got: torch.Tensor, want: torch.Tensor, tolerance: float) -> float:
    if got.shape != want.shape:
        raise RunError(
            f"{name} export returns shape {tuple(got.shape)}, expected {tuple(want.shape)}"
        )
    diff = float((got.float() - want).abs().max()) if want.numel() else 0.0
    if not diff <= tolerance:
        raise RunError(
            f"{name} export differs from the eager model by {diff:.3g} (tolerance {tolerance:g}); "
            "the file was not kept"
        )
    return diff


def _batches(target: ExportTarget) -> list[int]:
    """Check at the full example batch and at a smaller one (proves the batch axis is free)."""
    full = int(target.example[0].shape[0])
    return sorted({full, max(1, full // 2)}, reverse=True)


def export_torchscript(cfg: Any, target: ExportTarget, out_dir: Path) -> dict[str, Any]:
    path = out_dir / "model.pt"
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # torch.jit is deprecated upstream, still the format asked for
        with torch.no_grad():
            if cfg.method == "script":
                compiled = torch.jit.script(target.module)
            else:
                compiled = torch.jit.trace(target.module, target.example, check_trace=False)
        # Save to memory: a file name would become the archive's inner folder name.
        buffer = io.BytesIO()
        torch.jit.save(compiled, buffer)
        atomic_write_bytes(path, portable_torchscript(buffer.getvalue()))
        loaded = torch.jit.load(str(path), map_location="cpu")
    diff = 0.0
    with torch.no_grad():
        for inputs in target.check_inputs():
            diff = max(
                diff, _check("TorchScript", loaded(*inputs), target.expected(inputs), cfg.tolerance)
            )
    return {"file": path.name, "max_abs_diff": diff}


def export_onnx(cfg: Any, target: ExportTarget, out_dir: Path) -> dict[str, Any]:
    import onnxruntime as ort

    path = out_dir / "model.onnx"
    dims: dict[str, Any] = {}
    dynamic_shapes = []
    for name in target.input_names:
        axes = target.dynamic_axes.get(name, {})
        dynamic_shapes.append(
            {
                axis: dims.setdefault(label, torch.export.Dim(label, min=1))
                for axis, label in axes.items()
            }
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                target.module,
                target.example,
                None,
                dynamo=True,
                opset_version=cfg.opset,
                input_names=target.input_names,
                output_names=target.output_names,
                dynamic_shapes=tuple(dynamic_shapes),
                verbose=False,
            )
        except Exception as exc:
            raise RunError(f"ONNX export failed: {type(exc).__name__}: {exc}") from exc
    assert program is not None
    proto = program.model_proto  # a property: each access converts afresh
    strip_stack_traces(proto.graph)
    data = proto.SerializeToString()
    atomic_write_bytes(path, data)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    diff = 0.0
    for inputs in target.check_inputs():
        feeds = {meta.name: x.numpy() for meta, x in zip(session.get_inputs(), inputs, strict=True)}
        got = torch.from_numpy(session.run(None, feeds)[0])
        diff = max(diff, _check("ONNX", got, target.expected(inputs), cfg.tolerance))
    return {"file": path.name, "max_abs_diff": diff, "opset": _opset(proto)}


def portable_torchscript(archive: bytes) -> bytes:
    """The archive without its debug records, which hold the absolute paths of the Python
    sources that were traced: the same model then has the same bytes wherever the project
    (and torch) are installed. Loading does not need them; error messages are less detailed.
    The serialization id, derived from the content, is recomputed from what is kept."""
    import hashlib
    import zipfile

    source = zipfile.ZipFile(io.BytesIO(archive))
    kept = [i for i in source.infolist() if not i.filename.endswith(".debug_pkl")]
    digest = hashlib.sha256()
    for info in kept:
        if not info.filename.endswith(".data/serialization_id"):
            digest.update(info.filename.encode() + source.read(info.filename))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for info in kept:
            data = source.read(info.filename)
            if info.filename.endswith(".data/serialization_id"):
                data = str(int(digest.hexdigest()[:32], 16)).encode()
            target.writestr(zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return out.getvalue()


def strip_stack_traces(graph: Any) -> None:
    """Drop the exporter's per-node Python stack traces (absolute source paths), in nested
    graphs too, so the ONNX file does not depend on where the project is installed."""
    for node in graph.node:
        kept = [p for p in node.metadata_props if p.key != "pkg.torch.onnx.stack_trace"]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)
        for attribute in node.attribute:
            if attribute.HasField("g"):
                strip_stack_traces(attribute.g)
            for sub in attribute.graphs:
                strip_stack_traces(sub)


def _opset(proto: Any) -> int:
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 0


def export_safetensors(cfg: Any, target: ExportTarget, out_dir: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    from torchkiln.runtime.datasets import write_tensors

    path = out_dir / "model.safetensors"
    write_tensors(path, target.weights)
    rebuilt = target.rebuild(load_file(path)).eval()
    diff = 0.0
    with torch.no_grad():
        for inputs in target.check_inputs():
            diff = max(
                diff,
                _check(
                    "safetensors", rebuilt(*inputs).float(), target.expected(inputs), cfg.tolerance
                ),
            )
    return {"file": path.name, "max_abs_diff": diff}


def describe_file(path: Path) -> dict[str, Any]:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}
