"""Plan, then execute, the stages of a pipeline (what `kiln run` and every DVC stage do).

Each stage writes under `runs/<pipeline>/<stage>/` (`torchkiln.layout`): `out/` (its
artifact, a DVC out), `metrics.json` and `plots/` (DVC metrics and plots). Old outputs are
removed first, as DVC does, and new ones are built in a staging folder and moved into
place only when the stage succeeds, so a failed or killed stage never leaves output that
looks complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from torchkiln.errors import RunError, UsageError
from torchkiln.layout import scratch_dir, stage_paths
from torchkiln.registry.registry import did_you_mean
from torchkiln.runtime.context import StageContext
from torchkiln.schemas.spec import Pipeline


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


def _inputs(pipeline: Pipeline, name: str) -> dict[str, Path]:
    inputs: dict[str, Path] = {}
    for slot, source in pipeline.stages[name].inputs.items():
        folder = stage_paths(pipeline.name, source).out
        if not folder.is_dir():
            raise RunError(
                f"stage {name!r} needs the output of stage {source!r} ({folder.as_posix()}), "
                f"which does not exist; run `kiln run {pipeline.file} --stage {source}` first "
                f"(or the whole pipeline)"
            )
        inputs[slot] = folder
    return inputs


def run_stage(pipeline: Pipeline, name: str, *, log: bool = True) -> float:
    """Run one stage; returns its wall time in seconds."""
    from torchkiln.runtime.device import seed_everything
    from torchkiln.runtime.progress import log as say

    node = pipeline.stages[name]
    paths = stage_paths(pipeline.name, name)
    inputs = _inputs(pipeline, name)
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
        deterministic=pipeline.deterministic,
        inputs=inputs,
        out_dir=staging / "out",
        metrics_path=staging / "metrics.json",
        plots_dir=staging / "plots",
        scratch_dir=scratch_dir(pipeline.name, name),
        spec_digest=pipeline.digest() if "*" in node.kind.reads else "",
    )
    ctx.out_dir.mkdir()
    if log:
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

    stages = plan(pipeline, only)
    total = 0.0
    for name in stages:
        seconds = run_stage(pipeline, name)
        total += seconds
        log(f"   {name} done in {seconds:.1f}s")
    log(f"{pipeline.name}: {len(stages)} stage(s) in {total:.1f}s")
