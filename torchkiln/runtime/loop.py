"""Batches: seeded epoch order, length buckets, iteration (in memory or through DataLoader
workers), device placement and autocast. Free of any model or objective; the training
engine (engine.py), evaluation and export use them."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from torchkiln.errors import RunError
from torchkiln.runtime.datasets import SplitData, TensorSplit
from torchkiln.runtime.stopping import held

Batch = tuple[tuple[torch.Tensor, ...], torch.Tensor]


def epoch_seed(seed: int, epoch: int) -> int:
    """A distinct, reproducible seed per epoch: resuming at an epoch replays it exactly."""
    return (seed * 1_000_003 + epoch * 7919 + 1) % (2**63 - 1)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))


def chunks(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    return list(order.split(batch_size))


def bucketed_chunks(
    order: torch.Tensor, lengths: torch.Tensor, batch_size: int, pool: int, seed: int
) -> list[torch.Tensor]:
    """Batches of similar lengths: `order` (already shuffled) is cut into pools of `pool`
    batches, each pool sorted by length (stable, so ties keep the shuffled order), cut into
    batches, and the batches shuffled. Same count of batches as `chunks`, so schedulers
    that count steps are unaffected; seeded, so resuming replays an epoch exactly."""
    lengths = lengths.to("cpu")
    pools = [p[torch.sort(lengths[p], stable=True).indices] for p in order.split(batch_size * pool)]
    batches = chunks(torch.cat(pools), batch_size) if pools else []
    shuffle = torch.randperm(len(batches), generator=torch.Generator().manual_seed(seed))
    return [batches[i] for i in shuffle.tolist()]


class _BatchDataset(torch.utils.data.Dataset[Batch]):
    """Each item is a whole batch, so DataLoader workers build batches in parallel."""

    def __init__(self, split: SplitData, index_chunks: list[torch.Tensor]) -> None:
        self.split, self.index_chunks = split, index_chunks

    def __len__(self) -> int:
        return len(self.index_chunks)

    def __getitem__(self, i: int) -> Batch:
        return self.split.batch(self.index_chunks[i])


def iterate_batches(
    split: SplitData,
    index_chunks: list[torch.Tensor],
    *,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> Iterator[Batch]:
    """Batches in the given order. In-memory splits are indexed directly (no per-example
    Python); other splits go through a DataLoader whose workers each build whole batches."""
    if isinstance(split, TensorSplit) or num_workers == 0:
        for index in index_chunks:
            yield split.batch(index)
        return
    loader = torch.utils.data.DataLoader(
        _BatchDataset(split, index_chunks),
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
        worker_init_fn=_worker_ignores_stop_signals,
    )
    # Python drops an exception raised in an at-fork hook (starting the workers runs
    # logging's) or in a __del__ (the iterator's stops them): a Ctrl-C there is held
    with held():
        batches = iter(loader)
    try:
        yield from batches
    finally:
        with held():
            del batches


def _worker_ignores_stop_signals(worker_id: int) -> None:
    """A DataLoader worker leaves Ctrl-C and SIGTERM to the main process, which stops it on
    its way out. A terminal's Ctrl-C (or `kill` of the process group, as Slurm and systemd
    do) reaches every process: a worker killed by it first would make the main process
    fail with torch's 'DataLoader worker ... is killed by signal' traceback instead of
    the one line that names what was interrupted. (A worker still ends if the main process
    dies: torch's watchdog in each worker checks.)"""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.excepthook = _quiet_when_main_left


def _quiet_when_main_left(args: threading.ExceptHookArgs) -> None:
    """In a worker: a main process stopped (Ctrl-C) while a batch's tensors were being
    handed over resets the connection of the worker's fd-sharing thread; that is no error
    to print a traceback for."""
    if not issubclass(args.exc_type, ConnectionError):
        threading.__excepthook__(args)


def to_device(batch: Batch, device: torch.device) -> Batch:
    inputs, targets = batch
    if device.type == "cpu":
        return batch
    return (
        tuple(t.to(device, non_blocking=True) for t in inputs),
        targets.to(device, non_blocking=True),
    )


def resident(split: SplitData, device: torch.device) -> SplitData:
    """Keep a small in-memory split on the GPU, so batches never cross the bus."""
    if device.type != "cuda" or not isinstance(split, TensorSplit):
        return split
    size = sum(t.numel() * t.element_size() for t in (*split.inputs, split.targets))
    free, _ = torch.cuda.mem_get_info(device)
    if size > free // 4:
        return split
    return TensorSplit(tuple(t.to(device) for t in split.inputs), split.targets.to(device))


def materialized(split: SplitData) -> SplitData:
    """Decode a file-backed split into memory once when it fits, instead of every epoch."""
    return split.materialize()


def autocast(device: torch.device, precision: str) -> AbstractContextManager[Any]:
    if precision == "fp32":
        return nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise RunError("precision fp16 needs a CUDA device; use bf16 on the CPU")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
