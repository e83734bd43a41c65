"""Plan, then execute, the stages of a pipeline (what `kiln run` and every DVC stage do).

Each stage writes under `runs/<pipeline>/<stage>/` (`torchkiln.layout`): `out/` (its
artifact, a DVC out), `metrics.json` and `plots/` (DVC metrics and plots). Old outputs are
removed first, as DVC does, and new ones are built in a staging folder and moved into
place only when the stage succeeds, so a failed or killed stage never leaves output that
looks complete.

`out/` is what the next stage takes, so it is the marker of a complete run: it goes first
when old outputs are removed and comes last when new ones are moved into place (each move
one rename, so a kill between two of them leaves metrics.json and plots/ without out/,
which no stage accepts, never out/ without its metrics). A failure to write (no space
left, an I/O error, a read-only folder) is an error naming the file, with nothing of the
run left in place.
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

from torchkiln.errors import (
    InputError,
    Interrupted,
    RunError,
    Terminated,
    UsageError,
    WriteError,
)
from torchkiln.layout import StagePaths, scratch_dir, stage_of, stage_paths
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


#: Folders a run keeps beside its outputs while it works: the new outputs being built, and
#: the old ones being deleted. A killed run leaves them; the next run of the stage removes them.
STAGING, DISCARDED = ".staging-", ".discarded-"


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

    from torchkiln.runtime import stopping

    try:
        with stopping.handling():
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
    with _failures_named(pipeline, name, paths):
        staging = _make_staging(paths)
        try:
            _discard_old(paths)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    if log:
        say(f"== {pipeline.name}: {name} ({node.kind.name}) ==")
    start = time.perf_counter()
    try:
        with _failures_named(pipeline, name, paths, staging):
            ctx = _context(pipeline, name, staging)
            ctx.out_dir.mkdir()
            seed_everything(pipeline.seed)
            node.kind().run(ctx)
            if node.kind.writes_metrics and not ctx.metrics_path.exists():
                raise RunError(f"stage kind {node.kind.name!r} did not write its metrics.json")
            _move_into_place(staging, paths)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return time.perf_counter() - start


def _make_staging(paths: StagePaths) -> Path:
    """The run's staging folder, made before anything old is removed, so a folder that
    cannot be written (read-only, full) fails the run with every old output in place.
    What a killed run left (staging and discard folders) is removed first."""
    if paths.root.exists():
        for leftover in [*paths.root.glob(f"{STAGING}*"), *paths.root.glob(f"{DISCARDED}*")]:
            shutil.rmtree(leftover, ignore_errors=True)
    paths.root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=STAGING, dir=paths.root))


def _discard_old(paths: StagePaths) -> None:
    """Remove a previous run's outputs, `out/` first. Each is renamed away in one step,
    then deleted: a folder that cannot be removed (read-only) is left whole, never emptied
    halfway. If a rename fails, what was renamed is put back: nothing changed."""
    old = [p for p in (paths.out, paths.metrics, paths.plots) if os.path.lexists(p)]
    if not old:
        return
    bin_ = Path(tempfile.mkdtemp(prefix=DISCARDED, dir=paths.root))
    moved: list[Path] = []
    try:
        for path in old:
            os.replace(path, bin_ / path.name)
            moved.append(path)
    except BaseException:
        for path in reversed(moved):
            with contextlib.suppress(OSError):
                os.replace(bin_ / path.name, path)
        raise
    finally:
        shutil.rmtree(bin_, ignore_errors=True)


def _move_into_place(staging: Path, paths: StagePaths) -> None:
    """plots/, then metrics.json, then out/ (see the module's docstring); if a move fails,
    what was moved is taken back out, so nothing of the run is left in place."""
    moved: list[Path] = []
    try:
        for final in (paths.plots, paths.metrics, paths.out):
            produced = staging / final.name
            if produced.exists():
                os.replace(produced, final)
                moved.append(final)
        _fsync_folder(paths.root)  # the renames themselves survive a power cut
    except BaseException:
        for final in reversed(moved):
            with contextlib.suppress(OSError):
                os.replace(final, staging / final.name)
        raise


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform or file system can
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _failures_named(
    pipeline: Pipeline, name: str, paths: StagePaths, staging: Path | None = None
) -> Iterator[None]:
    """A file-system failure during a stage becomes one line naming the file: an output by
    its final path (not the staging folder's), an upstream artifact with the stage that
    writes it. `staging` is None while old outputs are removed, before the stage starts."""
    try:
        yield
    except InputError as exc:
        hint = _rerun_hint(pipeline, exc.path)
        if not hint or hint in str(exc):
            raise
        raise InputError(f"{exc}{hint}", exc.path) from exc
    except WriteError as exc:
        public = _public(exc.path, staging, paths)
        raise WriteError(public, exc.cause) from exc
    except OSError as exc:
        if exc.filename is None:
            raise RunError(f"stage {name!r} of {pipeline.name} failed: {exc}") from exc
        path = _public(os.fsdecode(exc.filename), staging, paths)
        reason = exc.strerror or str(exc)
        if staging is None:  # removing the old outputs, making the staging folder
            folder = paths.root.as_posix() if _inside(path, paths.root) else path
            raise RunError(
                f"stage {name!r} of {pipeline.name} cannot write in {folder}: {reason}; "
                "nothing was changed"
            ) from exc
        if _inside(path, paths.root):
            raise WriteError(path, exc) from exc
        hint = _rerun_hint(pipeline, path)
        if hint:
            raise InputError(f"cannot read {path}: {reason}{hint}", path) from exc
        raise RunError(f"stage {name!r} of {pipeline.name} failed: {reason}: {path}") from exc


def _public(path: str, staging: Path | None, paths: StagePaths) -> str:
    """Where a file in the staging folder will be once the stage succeeds."""
    if staging is not None:
        relative = os.path.relpath(os.path.abspath(path), os.path.abspath(staging))
        if relative == "." or not relative.startswith(".."):
            return (paths.root / relative).as_posix() if relative != "." else paths.root.as_posix()
    return Path(path).as_posix()


def _inside(path: str, folder: Path) -> bool:
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(folder))
    return not relative.startswith("..")


def _rerun_hint(pipeline: Pipeline, path: str) -> str:
    """For a file of a stage's `out/`: which stage to run again to write it anew."""
    owner = stage_of(Path(path))
    if owner is None:
        return ""
    producer, stage = owner
    if producer == pipeline.name:
        command = f"kiln run {pipeline.file} --stage {stage}"
        return f"; run stage {stage!r} again to rewrite it ({command})"
    return f"; run stage {stage!r} of pipeline {producer!r} again to rewrite it"


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
