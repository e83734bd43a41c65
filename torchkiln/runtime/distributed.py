"""torch.distributed for the training engine: the process group, each rank's share of a
batch, reductions, wrapping the model (DDP or FSDP) and saving it whole.

A process learns its place from the environment torchrun (or kiln's own launcher,
`runtime/launch.py`) sets: RANK, WORLD_SIZE, LOCAL_RANK. Without them it is rank 0 of 1 and
nothing here communicates, so one-process training runs exactly the code it always ran.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from torchkiln.errors import PeerLost, RunError

#: How long a collective may wait for a rank before the group gives up (a dead worker is
#: noticed by the launcher well before that; this bounds a hang when it is not).
TIMEOUT = datetime.timedelta(minutes=10)


@dataclass(frozen=True)
class Group:
    """This process's place among the processes training one stage."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str = ""
    strategy: str = "ddp"

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes outputs, checkpoints and logs."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


SINGLE = Group()


def from_environment() -> Group:
    """The place torchrun's environment gives this process (rank 0 of 1 without it)."""
    try:
        return Group(
            rank=int(os.environ.get("RANK", "0")),
            world=int(os.environ.get("WORLD_SIZE", "1")),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        )
    except ValueError as exc:
        raise RunError(f"RANK/WORLD_SIZE/LOCAL_RANK are not numbers: {exc}") from exc


def launched() -> bool:
    """Whether this process was started by torchrun or kiln's launcher (as one of several)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def wanted_processes(settings: Any, device: torch.device) -> int:
    """How many processes a stage's `distributed:` block asks for on this machine."""
    if settings is None:
        return 1
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    if settings.nproc == "auto":
        return max(gpus, 1)
    if device.type == "cuda" and settings.nproc > gpus:
        raise RunError(
            f"distributed.nproc is {settings.nproc}, but this machine has {gpus} GPU(s); "
            "use nproc: auto (one process per GPU) or fewer processes"
        )
    return int(settings.nproc)


def backend_for(settings: Any, device: torch.device) -> str:
    backend = settings.backend
    if backend == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise RunError("distributed.backend nccl needs CUDA; use gloo (or auto) on the CPU")
    return str(backend)


@contextlib.contextmanager
def session(settings: Any, device: torch.device) -> Iterator[tuple[Group, torch.device]]:
    """Join the process group for the length of a stage; yields this rank's place and its
    device (cuda:LOCAL_RANK on GPUs). Everyone meets at a barrier at the end, so rank 0
    moves the outputs into place only once every rank is done."""
    place = from_environment()
    if settings is None or not place.active:
        yield SINGLE, device
        return
    import torch.distributed as dist

    backend = backend_for(settings, device)
    if device.type == "cuda":
        device = torch.device("cuda", place.local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=TIMEOUT)
    group = Group(place.rank, place.world, place.local_rank, backend, settings.strategy)
    try:
        yield group, device
        dist.barrier()
    except RuntimeError as exc:
        if not communication_failed(exc):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PeerLost(f"lost contact with another worker ({first[:200]})") from exc
    finally:
        dist.destroy_process_group()


def communication_failed(exc: BaseException) -> bool:
    """Whether an error is a collective failing because a peer is gone (not a bug here)."""
    import torch.distributed as dist

    text = str(exc)
    return isinstance(exc, dist.DistError) or any(
        marker in text for marker in ("gloo", "NCCL", "Connection reset", "Connection closed")
    )


def shard(index: torch.Tensor, group: Group) -> torch.Tensor:
    """This rank's contiguous share of a global batch's example indices."""
    if not group.active:
        return index
    return index.tensor_split(group.world)[group.rank]


def validation_share(index: torch.Tensor, group: Group) -> tuple[torch.Tensor, bool]:
    """This rank's share of a validation batch, and whether it counts. A rank whose share
    would be empty still scores one example (not counted): under FSDP every rank must run
    every forward pass."""
    share = shard(index, group)
    if len(share) == 0:
        return index[-1:], False
    return share, True


def rank_seed(seed: int, group: Group) -> int:
    """Each rank draws its own dropout and augmentation randomness; rank 0 keeps the seed a
    single process uses."""
    return (seed + group.rank * 1_000_000_007) % (2**63 - 1)


def all_sum(values: list[torch.Tensor], group: Group) -> list[torch.Tensor]:
    """Sum each tensor over the ranks (one collective for all of them)."""
    if not group.active or not values:
        return values
    import torch.distributed as dist

    flat = torch.stack([v.detach().to(torch.float64).reshape(()) for v in values])
    dist.all_reduce(flat)
    return [flat[i].to(v.dtype) for i, v in enumerate(values)]


def wrap(model: nn.Module, settings: Any, group: Group, device: torch.device) -> nn.Module:
    """DDP (the whole model on every rank, gradients averaged) or FSDP (torch's fully_shard:
    parameters, gradients and optimizer state sharded). Build the optimizer after this."""
    if not group.active:
        return model
    if settings.sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if group.strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for child in model.modules():
            if child is not model and any(p.requires_grad for p in child.parameters(False)):
                fully_shard(child)
        fully_shard(model)
        return model
    return ddp(model, group, device)


def ddp(module: nn.Module, group: Group, device: torch.device) -> nn.Module:
    """`module` in a DistributedDataParallel wrapper (itself in one process)."""
    if not group.active:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP (or torch.compile) wrapper; an FSDP model is itself."""
    inner = getattr(model, "module", None)
    if isinstance(model, nn.parallel.DistributedDataParallel) and inner is not None:
        model = inner
    return getattr(model, "_orig_mod", model)


def full_state(model: nn.Module, group: Group) -> dict[str, torch.Tensor]:
    """The whole model's state on the CPU, however it is sharded (a collective under FSDP:
    every rank must call it)."""
    plain = unwrap(model)
    if group.active and group.strategy == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_model_state_dict(plain, options=options)
    return plain.state_dict()


def load_full_state(model: nn.Module, state: dict[str, torch.Tensor], group: Group) -> None:
    plain = unwrap(model)
    if group.active and group.strategy == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(plain, state, options=StateDictOptions(full_state_dict=True))
        return
    plain.load_state_dict(state)


def optimizer_state(model: nn.Module, optimizer: Any, group: Group) -> dict[str, Any]:
    """The optimizer's state as one process would hold it (gathered under FSDP)."""
    if group.active and group.strategy == "fsdp":
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_optimizer_state_dict(unwrap(model), optimizer, options=options)
    return optimizer.state_dict()


def load_optimizer_state(model: nn.Module, optimizer: Any, state: Any, group: Group) -> None:
    if group.active and group.strategy == "fsdp":
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True)
        set_optimizer_state_dict(unwrap(model), optimizer, state, options=options)
        return
    optimizer.load_state_dict(state)
