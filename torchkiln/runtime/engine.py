"""The one training loop every task runs on.

The engine owns what every trainer would otherwise repeat: the seeded order of each
epoch's batches, resuming from epoch checkpoints, the non-finite-loss guard, progress,
the history, picking the kept epoch and early stopping. A task supplies its `Steps`: what
one training step does, and what an epoch adds to the history (validation, learning
rates). Classification (`runtime/supervised.py`) and GANs (`gan/train.py`) run on it.

It reads top to bottom: for each epoch, seed the random draws, take the epoch's batches,
run the task's step on each, then record, select and checkpoint.

On several processes (`runtime/distributed.py`) the engine gives each rank its share of
every global batch (with the factor that makes the ranks' averaged gradients those of the
whole batch), its own random stream, sums the epoch's meters over the ranks, and lets
only rank 0 save checkpoints. A task's steps stay what they are in one process.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol

import torch

from torchkiln.errors import RunError
from torchkiln.runtime.board import Board
from torchkiln.runtime.checkpoints import Checkpointer
from torchkiln.runtime.datasets import SplitData
from torchkiln.runtime.distributed import SINGLE, Group, all_sum, rank_seed, shard
from torchkiln.runtime.loop import (
    Batch,
    bucketed_chunks,
    chunks,
    epoch_order,
    epoch_seed,
    iterate_batches,
    to_device,
)
from torchkiln.runtime.progress import EpochProgress, log


class StepIndex(NamedTuple):
    """Where a step is: its epoch (0-based), its index in the epoch, the epoch's step
    count, and its index over the whole run (resuming replays the same numbers). `scale`
    turns this rank's mean loss into its part of the global batch's mean, for the
    gradient average across ranks (1.0 in one process)."""

    epoch: int
    step: int
    steps: int
    global_step: int
    scale: float = 1.0

    @property
    def last(self) -> bool:
        return self.step + 1 == self.steps


class Meter:
    """Per-epoch sums kept on the device: no host sync until the epoch ends."""

    def __init__(self, device: torch.device, names: Sequence[str] = ()) -> None:
        self.device = device
        #: name -> running sum (created at the first `add`, in that value's dtype)
        self.sums: dict[str, torch.Tensor | None] = dict.fromkeys(names)
        self.counts: dict[str, int] = dict.fromkeys(names, 0)

    def add(self, name: str, value: torch.Tensor, count: int = 1) -> None:
        """Add `value` (a sum over `count` examples or steps) to `name`'s running sum."""
        total = self.sums.get(name)
        if total is None:
            total = self.sums[name] = torch.zeros((), device=self.device, dtype=value.dtype)
        total.add_(value)
        self.counts[name] = self.counts.get(name, 0) + count

    def reduce(self, group: Group) -> None:
        """Sum every name's total and count over the ranks (one collective)."""
        if not group.active:
            return
        names = list(self.sums)
        totals = [self.sums[n] if self.sums[n] is not None else torch.zeros(()) for n in names]
        counts = [torch.tensor(float(self.counts[n])) for n in names]
        summed = all_sum([t.to(self.device) for t in totals + counts], group)
        for i, name in enumerate(names):
            self.sums[name] = summed[i]
            self.counts[name] = int(summed[len(names) + i])

    def means(self) -> dict[str, float]:
        """Each name's mean (0.0 for a name nothing was added to): one host sync."""
        return {
            k: float(v) / max(self.counts[k], 1) if v is not None else 0.0
            for k, v in self.sums.items()
        }


class NonFiniteGuard:
    """Records per-step losses on the device and checks them only now and then, so there
    is no host sync per step; a non-finite loss is still reported with its exact step."""

    def __init__(self, steps: int, device: torch.device, every: int = 25) -> None:
        self.losses = torch.zeros(max(steps, 1), device=device)
        self.every, self.checked = every, 0

    def record(self, step: int, loss: torch.Tensor) -> None:
        self.losses[step] = loss.detach().float()

    def check(self, step: int, epoch: int, force: bool = False) -> None:
        if not force and (step + 1) % self.every:
            return
        window = self.losses[self.checked : step + 1]
        if not bool(torch.isfinite(window).all()):
            bad = self.checked + int((~torch.isfinite(window)).nonzero()[0])
            value = float(self.losses[bad])
            raise RunError(
                f"the loss became {value} at epoch {epoch}, step {bad + 1}; training stopped. "
                "Try a lower learning rate, gradient clipping (clip_grad_norm), or fp32"
            )
        self.checked = step + 1


class Steps(Protocol):
    """What a task gives the engine."""

    #: the names the step adds to the meter, in the order the history records them
    record_keys: tuple[str, ...]
    #: TensorBoard, when the stage logs there (rank 0): the task may add images to it
    board: Board | None

    def start_epoch(self, epoch: int) -> None:
        """Before an epoch's first step (e.g. `model.train()`)."""

    def step(self, batch: Batch, at: StepIndex, meter: Meter) -> torch.Tensor:
        """One training step on a batch already on the device. Adds to `meter` what the
        epoch reports (sums); returns the detached loss the non-finite guard watches."""

    def finish_epoch(self, epoch: int, record: dict[str, Any]) -> dict[str, Any]:
        """After an epoch's steps, given its record so far (the meter's means): what else
        goes into the history (validation values, learning rates). Steps the schedulers
        that step once per epoch."""

    def snapshot(self) -> dict[str, torch.Tensor]:
        """The weights to keep if this epoch is the one selected (CPU copies)."""

    def state_dict(self) -> dict[str, Any]:
        """Everything a checkpoint needs to resume the task (model, optimizers, ...)."""

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class Plan:
    """How the engine walks the training data."""

    epochs: int
    batch_size: int
    #: drop a last batch smaller than `batch_size` (unless it is the only one)
    drop_last: bool = False
    bucket_by_length: bool = False
    bucket_pool: int = 50
    num_workers: int = 0


@dataclass(frozen=True)
class Selection:
    """Which epoch's weights are the result: the best by `monitor`, or the last."""

    monitor: str
    mode: Literal["min", "max"] = "min"
    keep_last: bool = False
    min_delta: float = 0.0
    #: stop after this many epochs without improvement (None: never stop early)
    patience: int | None = None

    def better(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        if self.mode == "min":
            return value < best - self.min_delta
        return value > best + self.min_delta


@dataclass
class FitResult:
    history: list[dict[str, Any]]
    best_epoch: int
    best_value: float
    #: what `Steps.snapshot()` returned at the selected epoch
    state: dict[str, torch.Tensor]
    stopped_early: bool

    @property
    def best_record(self) -> dict[str, Any]:
        return self.history[self.best_epoch - 1]


def epoch_batches(data: SplitData, plan: Plan, seed: int, epoch: int) -> list[torch.Tensor]:
    """The index batches of an epoch, in order (seeded by epoch: resuming replays it)."""
    order = epoch_order(len(data), seed, epoch)
    if plan.bucket_by_length:
        if data.lengths is None:
            raise RunError(
                "bucket_by_length groups examples by length, but this dataset's "
                "examples have no lengths (they all have one size); turn it off"
            )
        shuffle_seed = epoch_seed(seed, epoch) + 1
        parts = bucketed_chunks(
            order, data.lengths, plan.batch_size, plan.bucket_pool, shuffle_seed
        )
    else:
        parts = chunks(order, plan.batch_size)
    if plan.drop_last and len(parts) > 1 and len(parts[-1]) < plan.batch_size:
        parts = parts[:-1]
    return parts


def steps_per_epoch(data: SplitData, plan: Plan) -> int:
    full, rest = divmod(len(data), plan.batch_size)
    return full if plan.drop_last and full and rest else math.ceil(len(data) / plan.batch_size)


def rank_batches(batches: list[torch.Tensor], group: Group) -> list[tuple[torch.Tensor, float]]:
    """Each global batch's share for this rank, with its loss scale (see `StepIndex`). A
    last batch with fewer examples than ranks is left out: every rank must step."""
    if not group.active:
        return [(b, 1.0) for b in batches]
    if batches and len(batches[-1]) < group.world:
        batches = batches[:-1]
    return [(shard(b, group), len(shard(b, group)) * group.world / len(b)) for b in batches]


def fit(
    steps: Steps,
    data: SplitData,
    plan: Plan,
    selection: Selection,
    *,
    seed: int,
    device: torch.device,
    checkpoints: Checkpointer,
    group: Group = SINGLE,
    board: Board | None = None,
) -> FitResult:
    """Train for `plan.epochs` epochs (fewer when stopping early), resuming from the last
    checkpoint when there is one; returns the history and the selected epoch's weights.
    Every rank of a process group runs it; only rank 0 writes the checkpoints."""
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"value": None, "epoch": 0, "state": None, "waited": 0}
    start = 0
    saved = checkpoints.load()
    if saved is not None:
        steps.load_state_dict(saved["task"])
        history, best, start = list(saved["history"]), saved["best"], int(saved["epoch"])
        log(f"resuming from the checkpoint after epoch {start}")
    progress = EpochProgress(plan.epochs, steps_per_epoch(data, plan))
    stopped = bool(best.get("stopped", False))
    for epoch in range(start, plan.epochs if not stopped else start):
        progress.start(epoch + 1)
        steps.start_epoch(epoch)
        # dropout, augmentation, noise draws: each rank its own stream (rank 0's is the
        # one a single process draws)
        torch.manual_seed(rank_seed(epoch_seed(seed, epoch), group))
        shares = rank_batches(epoch_batches(data, plan, seed, epoch), group)
        count = len(shares)
        guard = NonFiniteGuard(count, device)
        meter = Meter(device, steps.record_keys)
        loader = iterate_batches(
            data,
            [index for index, _ in shares],
            num_workers=plan.num_workers,
            pin_memory=device.type == "cuda",
        )
        for step, batch in enumerate(loader):
            at = StepIndex(epoch, step, count, epoch * count + step, shares[step][1])
            loss = steps.step(to_device(batch, device), at, meter)
            guard.record(step, loss)
            logged = guard.checked
            guard.check(step, epoch + 1, force=at.last)
            if board is not None and guard.checked > logged:  # synced anyway: log the steps
                board.losses(epoch * count + logged, guard.losses[logged : guard.checked])
            progress.step(1)
        meter.reduce(group)
        record: dict[str, Any] = {"epoch": epoch + 1, **meter.means()}
        record.update(steps.finish_epoch(epoch, record))
        history.append(record)
        if board is not None:
            board.epoch(record)
        note = ""
        if selection.keep_last or selection.better(record[selection.monitor], best["value"]):
            best = {"value": record[selection.monitor], "epoch": epoch + 1, "waited": 0}
            best["state"] = steps.snapshot()
            note = "" if selection.keep_last else "  *"
        else:
            best["waited"] += 1
        progress.end(epoch + 1, record, note)
        if selection.patience is not None and best["waited"] >= selection.patience:
            stopped = best["stopped"] = True
            log(f"early stopping: {selection.monitor} has not improved for {best['waited']} epochs")
        state = steps.state_dict()  # every rank: gathering a sharded model is collective
        if group.main:
            checkpoints.save({"epoch": epoch + 1, "history": history, "best": best, "task": state})
        if stopped:
            break
    return FitResult(
        history=history,
        best_epoch=int(best["epoch"]),
        best_value=float(best["value"]),
        state=best["state"],
        stopped_early=stopped,
    )
