"""Finding a pipeline's exported files, for commands that use them (predict, sample)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from torchkiln.errors import RunError, UsageError


def export_folder(spec: Path, stage: str | None, purpose: str) -> tuple[str, Path]:
    """The pipeline's name and its export stage's output folder (validates the spec).

    `purpose` ends the message when the spec has no export stage ("to predict with")."""
    from torchkiln.runner import stage_paths
    from torchkiln.schemas.spec import load_pipeline

    pipeline = load_pipeline(spec)
    exports = [n for n, node in pipeline.stages.items() if node.kind.produces == "export"]
    if stage is not None:
        if stage not in exports:
            raise UsageError(
                f"{spec.as_posix()} has no export stage {stage!r}; export stages: "
                + (", ".join(exports) or "(none)")
            )
        exports = [stage]
    if not exports:
        raise UsageError(f"{spec.as_posix()} has no export stage, so nothing {purpose}")
    if len(exports) > 1:
        raise UsageError(f"{spec.as_posix()} has several export stages; pick one with --stage")
    return pipeline.name, stage_paths(pipeline.name, exports[0]).out


def add_export_arguments(parser: argparse.ArgumentParser, runs: str) -> None:
    """`--format` and `--stage`, shared by the commands that run an exported model."""
    parser.add_argument(
        "--format",
        choices=("auto", "onnx", "torchscript"),
        default="auto",
        help=f"which exported file runs the {runs} (auto: ONNX, safe to load from anyone; "
        "TorchScript only when asked, since loading it runs the code it holds)",
    )
    parser.add_argument("--stage", metavar="STAGE", help="the export stage (default: the only one)")


def exported_file(folder: Path, fmt: str) -> tuple[str, Path]:
    """(format, path) of the exported model to run. `auto` is ONNX, never TorchScript: an
    export folder may come from someone else (`dvc artifacts get`), and loading TorchScript
    runs the program inside it, so it runs only when asked for with `--format torchscript`."""
    onnx, script = folder / "model.onnx", folder / "model.pt"
    if fmt == "auto" and not onnx.exists() and script.exists():
        raise RunError(
            f"{onnx.as_posix()} does not exist, and kiln does not fall back to "
            f"{script.as_posix()} on its own: TorchScript runs the code it holds when loaded, "
            "so use it only from someone you trust, with --format torchscript (or add onnx "
            "to the export stage's formats and rerun the export)"
        )
    if fmt == "auto":
        fmt = "onnx"
    path = onnx if fmt == "onnx" else script
    if not path.exists():
        raise RunError(
            f"{path.as_posix()} does not exist; add {fmt} to the export stage's formats "
            "(or pick another with --format) and rerun the export"
        )
    return fmt, path


def read_card(folder: Path) -> dict[str, Any]:
    """The export folder's model card; a missing one says which command makes it."""
    path = folder / "model_card.json"
    if not path.exists():
        raise RunError(
            f"no exported model in {folder.as_posix()}: run the pipeline through its export "
            "stage first (`kiln run SPEC` or `dvc repro`)"
        )
    card: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return card
