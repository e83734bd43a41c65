"""Finding a pipeline's exported files, for commands that use them (predict, sample)."""

from __future__ import annotations

from pathlib import Path

from torchkiln.errors import UsageError


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
