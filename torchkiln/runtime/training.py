"""What every training stage does around the engine, written once: resolve the device, join
the process group, build the task's steps, key the checkpoints, run `engine.fit`, let rank
0 write the outputs, and feed TensorBoard when asked. A task (train.py for classification,
gan/train.py for GANs) supplies how to build its steps, how to pick the kept epoch, and
what to write."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torchkiln.errors import RunError
from torchkiln.runtime import distributed
from torchkiln.runtime.board import Board, flat_settings
from torchkiln.runtime.checkpoints import Checkpointer, run_key
from torchkiln.runtime.context import StageContext
from torchkiln.runtime.datasets import SplitData
from torchkiln.runtime.device import resolve_device
from torchkiln.runtime.distributed import Group
from torchkiln.runtime.engine import FitResult, Plan, Selection, Steps, fit

#: Config keys a checkpoint stays valid across: how many processes train, and where the
#: progress is also logged, change nothing about the result.
NOT_IN_KEY = ("distributed", "loggers")

Build = Callable[[StageContext, Any, Group], tuple[Steps, SplitData]]
Write = Callable[[StageContext, Any, FitResult, Group], None]


def run_training(
    ctx: StageContext,
    build: Build,
    plan: Plan,
    select: Callable[[Any], Selection],
    write: Write,
) -> tuple[Any, FitResult]:
    """Train one stage; returns its steps and the engine's result."""
    cfg = ctx.config
    device = resolve_device(ctx.device, deterministic=ctx.deterministic)
    with distributed.session(cfg.distributed, device) as (group, device):
        if group.active and cfg.batch_size % group.world:
            raise RunError(
                f"batch_size {cfg.batch_size} is the global batch and must divide evenly "
                f"among the {group.world} processes"
            )
        steps, data = build(ctx, device, group)
        board = None
        if "tensorboard" in cfg.loggers and group.main:
            board = steps.board = Board(ctx.pipeline, ctx.stage)
        key = run_key(cfg, ctx.seed, ctx.task.name, ctx.device, ctx.inputs, ignore=NOT_IN_KEY)
        checkpoints = Checkpointer(ctx.scratch_dir, key, stage=ctx.stage, enabled=cfg.resume)
        result = fit(
            steps,
            data,
            plan,
            select(steps),
            seed=ctx.seed,
            device=device,
            checkpoints=checkpoints,
            group=group,
            board=board,
        )
        if group.main:
            write(ctx, steps, result, group)
            checkpoints.clear()
        if board is not None:
            summary = {k: v for k, v in result.best_record.items() if k != "epoch"}
            board.hparams(flat_settings(cfg), {**summary, "best_epoch": result.best_epoch})
            board.close()
    return steps, result


def distributed_record(cfg: Any, group: Group) -> dict[str, Any]:
    """How the model was trained, for model.json (and so the model card)."""
    if cfg.distributed is None:
        return {}
    return {
        "distributed": {
            **cfg.distributed.model_dump(mode="json"),
            "processes": group.world,
            "backend": group.backend or None,
        }
    }
