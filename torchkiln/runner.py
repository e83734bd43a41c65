"""Plan, then execute, the stages of a pipeline (what `kiln run` and every DVC stage do).

Each stage writes under `runs/<pipeline>/<stage>/` (`torchkiln.layout`): `out/` (its
artifact, a DVC out), `metrics.json` and `plots/` (DVC metrics and plots). Old outputs are
removed first, as DVC does, and new ones are built in a staging folder and moved into
place only when the stage succeeds, so a failed or killed stage never leaves output that
looks complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torchkiln.errors import Interrupted, RunError, Terminated, UsageError
from torchkiln.layout import scratch_dir, stage_paths
from torchkiln.locks import stage_lock
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
    """Run one stage; returns its wall time in seconds.

    A stage whose `distributed:` settings ask for several processes is run by that many
    workers (`runtime/launch.py`), each of which comes back here; in a worker, only rank 0
    touches `runs/` (it removes the old outputs and moves the new ones into place)."""
    with stage_lock_for(pipeline, name), interruptible(pipeline, name):
        return _run_stage(pipeline, name, log=log)


def stage_lock_for(pipeline: Pipeline, name: str) -> contextlib.AbstractContextManager[None]:
    """The stage's lock (`torchkiln.locks`), taken by the process that owns the run: a
    worker kiln launched runs under its launcher's lock; under torchrun, rank 0 takes it."""
    from torchkiln.runtime import distributed, launch

    if distributed.launched() and (
        launch.LAUNCHER_ENV in os.environ or not distributed.from_environment().main
    ):
        return contextlib.nullcontext()
    return stage_lock(pipeline.name, name)


def _run_stage(pipeline: Pipeline, name: str, *, log: bool) -> float:
    from torchkiln.runtime import distributed, launch
    from torchkiln.runtime.progress import log as say

    node = pipeline.stages[name]
    settings = node.kind.distributed(node.config)
    if settings is not None and not distributed.launched():
        workers = _workers(pipeline, settings)
        if workers > 1:
            if log:
                say(f"== {pipeline.name}: {name} ({node.kind.name}) on {workers} processes ==")
            start = time.perf_counter()
            command = [sys.executable, "-m", "torchkiln.cli", "run", pipeline.file]
            launch.run_workers([*command, "--stage", name], workers, stage=name)
            return time.perf_counter() - start
    launch.follow_launcher()
    if distributed.from_environment().main:  # alone, or rank 0 of the workers
        return _run_here(pipeline, name, log=log and not distributed.launched())
    return _run_as_helper(pipeline, name)


@contextlib.contextmanager
def interruptible(pipeline: Pipeline, name: str) -> Iterator[None]:
    """Ctrl-C and SIGTERM become one line naming the stage (exit 130 or 143); the staging
    folder is removed on the way out, and the last epoch checkpoint is kept."""

    def what() -> str:
        text = f"stage {name!r} of {pipeline.name}: nothing was written"
        if any(scratch_dir(pipeline.name, name).glob("*.pt")):
            text += "; its last epoch checkpoint is kept, so running it again resumes"
        return text

    try:
        yield
    except KeyboardInterrupt as exc:
        raise Interrupted(f"interrupted {what()}", signal.SIGINT) from exc
    except Terminated as exc:
        raise Interrupted(f"terminated {what()}", signal.SIGTERM) from exc


def _workers(pipeline: Pipeline, settings: Any) -> int:
    from torchkiln.runtime.device import resolve_device
    from torchkiln.runtime.distributed import wanted_processes

    device = resolve_device(pipeline.device, deterministic=pipeline.deterministic)
    return wanted_processes(settings, device)


def _context(pipeline: Pipeline, name: str, root: Path) -> StageContext:
    node = pipeline.stages[name]
    return StageContext(
        pipeline=pipeline.name,
        stage=name,
        config=node.config,
        seed=pipeline.seed,
        task=pipeline.task,
        device=pipeline.device,
        deterministic=pipeline.deterministic,
        inputs=_inputs(pipeline, name),
        out_dir=root / "out",
        metrics_path=root / "metrics.json",
        plots_dir=root / "plots",
        scratch_dir=scratch_dir(pipeline.name, name),
        spec_digest=pipeline.digest() if "*" in node.kind.reads else "",
    )


def _run_here(pipeline: Pipeline, name: str, *, log: bool) -> float:
    """Run a stage in this process (alone, or as rank 0 of its workers): staged outputs,
    moved into place only when the stage succeeds."""
    from torchkiln.runtime.device import seed_everything
    from torchkiln.runtime.progress import log as say

    node = pipeline.stages[name]
    paths = stage_paths(pipeline.name, name)
    _inputs(pipeline, name)  # before anything is removed: a missing input changes nothing
    for leftover in paths.root.glob(".staging-*") if paths.root.exists() else []:
        shutil.rmtree(leftover, ignore_errors=True)
    for old in (paths.out, paths.metrics, paths.plots):
        _remove(old)
    paths.root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=paths.root))
    ctx = _context(pipeline, name, staging)
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


def _run_as_helper(pipeline: Pipeline, name: str) -> float:
    """A worker other than rank 0: it trains, but writes nothing under runs/ (its context
    points at a private folder, removed afterwards)."""
    from torchkiln.runtime.device import seed_everything

    node = pipeline.stages[name]
    start = time.perf_counter()
    private = Path(tempfile.mkdtemp(prefix="kiln-worker-"))
    try:
        ctx = _context(pipeline, name, private)
        ctx.out_dir.mkdir()
        seed_everything(pipeline.seed)
        node.kind().run(ctx)
    finally:
        shutil.rmtree(private, ignore_errors=True)
    return time.perf_counter() - start


def run_pipeline(pipeline: Pipeline, only: list[str] | None = None) -> None:
    from torchkiln.runtime.distributed import launched
    from torchkiln.runtime.progress import log

    stages = plan(pipeline, only)
    total = 0.0
    for name in stages:
        seconds = run_stage(pipeline, name)
        total += seconds
        if not launched():  # a worker's launcher reports the time
            log(f"   {name} done in {seconds:.1f}s")
    if not launched():
        log(f"{pipeline.name}: {len(stages)} stage(s) in {total:.1f}s")
