"""What a running stage is given: its validated config, the top-level keys it reads, and
its paths. The runner fills it in; run-time code needs nothing else from the spec."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class StageContext:
    """Everything a running stage may use."""

    pipeline: str
    stage: str
    #: the stage's validated config (its kind's config model)
    config: Any
    seed: int
    #: the pipeline's task (a `TaskConfig`)
    task: Any
    #: as the spec says it (`auto`, `cpu`, `cuda:1`...): `runtime.device.resolve_device`
    device: str
    #: slot -> the producing stage's `out/` folder
    inputs: dict[str, Path]
    #: where the stage writes: inside a staging folder the runner moves into place on success
    out_dir: Path
    metrics_path: Path
    plots_dir: Path
    #: undeclared, survives failures (epoch checkpoints)
    scratch_dir: Path
    #: sha256 of the whole validated spec; given only to kinds that read "*" (export's card)
    spec_digest: str = ""
    #: fail on ops with no deterministic CUDA kernel (the spec's `deterministic`)
    deterministic: bool = True

    def input(self, slot: str) -> Path:
        return self.inputs[slot]

    def optional_input(self, slot: str) -> Path | None:
        return self.inputs.get(slot)
