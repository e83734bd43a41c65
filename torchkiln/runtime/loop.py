"""Pieces every training loop shares: batch order, batch iteration, device placement,
epoch checkpoints for resuming, non-finite loss detection, and progress.

Kept free of any particular model or objective, so the supervised loop (train.py) and
the GAN loop use the same machinery.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch

from torchkiln.errors import RunError
from torchkiln.io import atomic_path, sha256_tree
from torchkiln.runtime.datasets import SplitData, TensorSplit
from torchkiln.runtime.progress import interactive, log

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
    )
    yield from loader


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


def materialized(split: SplitData, max_bytes: int = 2 << 30) -> SplitData:
    """Decode a file-backed split into memory once when it fits, instead of every epoch."""
    materialize = getattr(split, "materialize", None)
    if materialize is None:
        return split
    shape = getattr(split, "size", None)
    channels = getattr(split, "channels", 3)
    if shape is not None and len(split) * channels * math.prod(shape) > max_bytes:
        return split
    return materialize()


def autocast(device: torch.device, precision: str) -> AbstractContextManager[Any]:
    if precision == "fp32":
        return nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise RunError("precision fp16 needs a CUDA device; use bf16 on the CPU")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


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


class Checkpointer:
    """Epoch checkpoints in an undeclared scratch folder, keyed by everything that
    determines the run, so a killed run resumes and a changed one starts afresh."""

    def __init__(self, folder: Path, key: str, enabled: bool = True) -> None:
        self.folder, self.key, self.enabled = folder, key, enabled
        self.path = folder / f"{key[:16]}.pt"

    def load(self) -> dict[str, Any] | None:
        if not self.enabled or not self.path.exists():
            return None
        try:
            return torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a torn or foreign file: start over rather than fail
            log(f"ignoring unreadable checkpoint {self.path.as_posix()} ({exc})")
            return None

    def save(self, state: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob("*.pt"):
            if stale != self.path:
                stale.unlink()
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)

    def clear(self) -> None:
        if self.path.exists():
            self.path.unlink()


def run_key(config: Any, seed: int, task: str, device: str, inputs: dict[str, Path]) -> str:
    """Hash of everything a training run's result depends on."""
    blob = json.dumps(
        {
            "config": config.model_dump(mode="json"),
            "seed": seed,
            "task": task,
            "device": device,
            "inputs": {slot: sha256_tree(path) for slot, path in sorted(inputs.items())},
            "torch": torch.__version__,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


class EpochProgress:
    """A step bar per epoch on a terminal; one summary line per epoch elsewhere."""

    def __init__(self, epochs: int, steps: int) -> None:
        self.epochs, self.steps = epochs, steps
        self.bar: Any = None
        self.started = 0.0

    def start(self, epoch: int) -> None:
        self.started = time.perf_counter()
        if interactive():
            from tqdm import tqdm

            self.bar = tqdm(
                total=self.steps,
                desc=f"epoch {epoch}/{self.epochs}",
                leave=False,
                dynamic_ncols=True,
            )

    def step(self, n: int = 1, **postfix: float) -> None:
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix({k: f"{v:.4f}" for k, v in postfix.items()}, refresh=False)

    def end(self, epoch: int, record: dict[str, Any], note: str = "") -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        shown = "  ".join(
            f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
            for k, v in record.items()
            if k != "epoch"
        )
        seconds = time.perf_counter() - self.started
        log(f"epoch {epoch}/{self.epochs}  {shown}  ({seconds:.1f}s){note}")
