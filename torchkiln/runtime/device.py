"""Device resolution, seeding and deterministic kernels: what every stage does first."""

from __future__ import annotations

import os
import random

import torch

from torchkiln.errors import RunError


def resolve_device(requested: str, *, deterministic: bool = True) -> torch.device:
    """The device a spec's `device:` means here (`auto`: CUDA when available, else the CPU).

    On CUDA, deterministic kernels are enforced unless the spec says `deterministic: false`:
    an op without a deterministic kernel then fails with torch's message naming it, rather
    than giving different bytes on a rerun. The CPU kernels torchkiln uses are
    deterministic already (and the switch costs a second of imports), so it is left alone.
    """
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RunError(f"device {requested!r} was requested but CUDA is not available here")
        torch.use_deterministic_algorithms(deterministic)
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
    return torch.device(requested)


def seed_everything(seed: int) -> None:
    """Seed every generator (same inputs, same bytes)."""
    import numpy as np

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
