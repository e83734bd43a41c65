"""Where a pipeline's stages live on disk, and what DVC calls them.

The DVC compiler and the runner both need these names and must agree on them; neither
imports the other, so they share this module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: What `kiln dvc` writes, at the repository's root.
DVC_FILE = Path("dvc.yaml")
#: Each stage writes under runs/<pipeline>/<stage>/.
RUNS = Path("runs")
#: Undeclared per-stage scratch (epoch checkpoints): survives failures, not a DVC output.
SCRATCH = Path(".kiln") / "scratch"


@dataclass(frozen=True)
class StagePaths:
    """A stage's outputs: `out/` (its artifact, a DVC out), `metrics.json` and `plots/`."""

    root: Path

    @property
    def out(self) -> Path:
        return self.root / "out"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def plots(self) -> Path:
        return self.root / "plots"


def stage_paths(pipeline: str, stage: str) -> StagePaths:
    return StagePaths(RUNS / pipeline / stage)


def stage_out(pipeline: str, stage: str) -> str:
    """A stage's artifact folder as a POSIX path relative to the repository root."""
    return stage_paths(pipeline, stage).out.as_posix()


def stage_of(path: Path) -> tuple[str, str] | None:
    """(pipeline, stage) of the `out/` folder that holds `path`, else None."""
    parts = Path(os.path.relpath(path)).parts
    if len(parts) >= 4 and parts[0] == RUNS.name and parts[3] == "out":
        return parts[1], parts[2]
    return None


def scratch_dir(pipeline: str, stage: str) -> Path:
    return SCRATCH / pipeline / stage


def dvc_stage_name(pipeline: str, stage: str) -> str:
    """The DVC stage of a pipeline stage: `<pipeline>-<stage>`."""
    return f"{pipeline}-{stage}"
