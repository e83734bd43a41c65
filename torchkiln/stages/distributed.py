"""The `distributed:` block of a training stage: how many processes train it, and how.

Declarations only (validation imports no torch). The run-time side is
`torchkiln.runtime.distributed` (process group, sharding, reductions, DDP/FSDP wrapping)
and `torchkiln.runtime.launch` (starting the workers, as `torchrun --standalone` does).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from torchkiln.registry.component import Config

#: Most processes one stage may start on one machine (a guard against typos like 1000).
MAX_PROCESSES = 1024


class DistributedConfig(Config):
    """Train on several processes with torch.distributed; `batch_size` stays the global
    batch, so the spec means the same experiment whatever the process count."""

    nproc: Annotated[int, Field(ge=1, le=MAX_PROCESSES)] | Literal["auto"] = 1
    """Processes on this machine: a number, or `auto` (one per visible GPU on CUDA, 1 on
    the CPU). kiln starts them itself; under `torchrun` (several machines, Slurm) the
    launcher's own processes are used instead."""
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    """Communication backend: `auto` is nccl on CUDA and gloo on the CPU."""
    strategy: Literal["ddp", "fsdp"] = "ddp"
    """`ddp`: every process holds the whole model, gradients are averaged. `fsdp`: the
    model, gradients and optimizer state are sharded across processes (torch's
    fully_shard), for models that do not fit one device; checkpoints and the trained
    model are saved whole either way."""
    sync_batchnorm: bool = False
    """Compute BatchNorm statistics over the global batch (SyncBatchNorm) instead of each
    process's share of it."""


def distributed_problems(
    settings: DistributedConfig | None, batch_size: int, device: str
) -> list[tuple[tuple[str | int, ...], str]]:
    """What validation can refuse before anything runs (the rest is checked at start, where
    the GPUs can be counted)."""
    if settings is None:
        return []
    problems: list[tuple[tuple[str | int, ...], str]] = []
    if isinstance(settings.nproc, int) and batch_size % settings.nproc:
        problems.append(
            (
                ("distributed", "nproc"),
                f"batch_size {batch_size} is the global batch and must divide evenly among "
                f"{settings.nproc} processes; use a multiple of {settings.nproc}",
            )
        )
    if settings.backend == "nccl" and device in ("cpu", "mps"):
        problems.append(
            (
                ("distributed", "backend"),
                f"nccl needs CUDA, but the spec's device is {device}; use gloo (or auto)",
            )
        )
    return problems
