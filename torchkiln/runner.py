"""Plan, then execute, the stages of a pipeline (what `kiln run` and every DVC stage do).

Each stage writes under `runs/<pipeline>/<stage>/`: `out/` (its artifact, a DVC out),
`metrics.json` and `plots/` (DVC metrics and plots). Old outputs are removed first, as
DVC does, and new ones are built in a staging folder and moved into place only when the
stage succeeds, so a failed or killed stage never leaves output that looks complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from torchkiln.errors import RunError, UsageError
from torchkiln.registry.registry import did_you_mean
from torchkiln.schemas.spec import Pipeline
from torchkiln.stages.base import StageContext

RUNS = Path("runs")
SCRATCH = Path(".kiln") / "scratch"


@dataclass(frozen=True)
class StagePaths:
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


def plan(pipeline: Pipeline, only: list[str] | None = None) -> list[str]:
    """The stages to run, in dependency order: all of them, or just those named."""
    if not only:
        return list(pipeline.order)
    for name in only:
        if name not in pipeline.stages:
            known = list(pipeline.stages)
            raise UsageError(
                f"{pipeline.file} has no stage {name!r}; "
                f"{did_you_mean(name, known)}stages: {', '.join(known)}"
            )
    return [s for s in pipeline.order if s in only]


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RunError(f"device {requested!r} was requested but CUDA is not available here")
        # Deterministic kernels on the GPU (same inputs, same bytes). Not called on the CPU,
        # where kernels are deterministic already and the call costs a second of imports.
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    return requested


def seed_everything(seed: int) -> None:
    """Seed every generator and prefer deterministic kernels (same inputs, same bytes)."""
    import random

    import numpy as np
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def check_not_stale(pipeline: Pipeline, name: str) -> None:
    """Under `dvc repro`, refuse to run from a dvc.yaml entry the spec no longer matches.

    Parameter edits are DVC's business; a structural edit (a new input, a new plugin, a
    changed data path) changes the entry, and running the old one would cache a lie.
    """
    from torchkiln.dvc import stage_name, stale_entry_problem

    running = os.environ.get("DVC_STAGE")
    if running is None or running.rsplit(":", 1)[-1] != stage_name(pipeline.name, name):
        return
    if name not in pipeline.stages:
        raise RunError(f"dvc.yaml is stale: run kiln dvc ({pipeline.file} has no stage {name!r})")
    problem = stale_entry_problem(pipeline, name, Path(os.environ.get("DVC_ROOT", ".")))
    if problem:
        raise RunError(f"dvc.yaml is stale: run kiln dvc ({problem}; or use `kiln repro`)")


def run_stage(pipeline: Pipeline, name: str, *, log: bool = True) -> float:
    """Run one stage; returns its wall time in seconds."""
    node = pipeline.stages[name]
    paths = stage_paths(pipeline.name, name)
    inputs: dict[str, Path] = {}
    for slot, source in node.inputs.items():
        folder = stage_paths(pipeline.name, source).out
        if not folder.is_dir():
            raise RunError(
                f"stage {name!r} needs the output of stage {source!r} ({folder.as_posix()}), "
                f"which does not exist; run `kiln run {pipeline.file} --stage {source}` first "
                f"(or the whole pipeline)"
            )
        inputs[slot] = folder
    for leftover in paths.root.glob(".staging-*") if paths.root.exists() else []:
        shutil.rmtree(leftover, ignore_errors=True)
    for old in (paths.out, paths.metrics, paths.plots):
        _remove(old)
    paths.root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=paths.root))
    ctx = StageContext(
        pipeline=pipeline.name,
        stage=name,
        config=node.config,
        seed=pipeline.seed,
        task=pipeline.task,
        device=pipeline.device,
        inputs=inputs,
        out_dir=staging / "out",
        metrics_path=staging / "metrics.json",
        plots_dir=staging / "plots",
        scratch_dir=SCRATCH / pipeline.name / name,
        spec_digest=pipeline.digest() if "*" in node.kind.reads else "",
    )
    ctx.out_dir.mkdir()
    if log:
        from torchkiln.runtime.progress import log as say

        say(f"== {pipeline.name}: {name} ({node.kind.name}) ==")
    start = time.perf_counter()
    try:
        seed_everything(pipeline.seed)
        node.kind().run(ctx)
        if node.kind.writes_metrics and not ctx.metrics_path.exists():
            raise RunError(f"stage kind {node.kind.name!r} did not write its metrics.json")
        for produced, final in (
            (ctx.out_dir, paths.out),
            (ctx.metrics_path, paths.metrics),
            (ctx.plots_dir, paths.plots),
        ):
            if produced.exists():
                os.replace(produced, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return time.perf_counter() - start


def run_pipeline(pipeline: Pipeline, only: list[str] | None = None) -> None:
    from torchkiln.runtime.progress import log

    for name in only or []:
        check_not_stale(pipeline, name)
    stages = plan(pipeline, only)
    total = 0.0
    for name in stages:
        seconds = run_stage(pipeline, name)
        total += seconds
        log(f"   {name} done in {seconds:.1f}s")
    log(f"{pipeline.name}: {len(stages)} stage(s) in {total:.1f}s")
