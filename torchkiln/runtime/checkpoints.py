"""Epoch checkpoints in the stage's undeclared scratch folder, keyed by everything that
determines the run: a killed run resumes where it stopped, a changed one starts afresh."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from torchkiln.errors import RunError
from torchkiln.io import atomic_path, sha256_tree

#: Bumped when the checkpoint layout changes, so an older file is never misread.
FORMAT = 2


class Checkpointer:
    """One checkpoint file per stage, replaced atomically after every epoch."""

    def __init__(self, folder: Path, key: str, *, stage: str = "train", enabled: bool = True):
        self.folder, self.key, self.stage, self.enabled = folder, key, stage, enabled
        self.path = folder / f"{key[:16]}.pt"

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None when there is none. A file that exists but cannot be
        read (it is written atomically, so only something else can have damaged it) stops
        the stage rather than silently training again from the start."""
        if not self.enabled or not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise RunError(
                f"cannot resume stage {self.stage!r}: its checkpoint {self.path.as_posix()} is "
                f"unreadable ({type(exc).__name__}: {exc}). Delete that file to train this stage "
                "from the start (or set `resume: false`)"
            ) from exc
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise RunError(
                f"cannot resume stage {self.stage!r}: {self.path.as_posix()} is not a torchkiln "
                "checkpoint of this version. Delete it to train this stage from the start"
            )
        return state

    def save(self, state: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob("*.pt"):
            if stale != self.path:
                stale.unlink()
        # through a Python file: a full disk is then an OSError (which atomic_path reports
        # naming the file), not torch's own writer failing with no reason given
        with atomic_path(self.path) as tmp, tmp.open("wb") as fh:
            torch.save({**state, "format": FORMAT}, fh)

    def clear(self) -> None:
        if self.path.exists():
            self.path.unlink()


def run_key(
    config: Any,
    seed: int,
    task: str,
    device: str,
    inputs: dict[str, Path],
    *,
    ignore: tuple[str, ...] = (),
) -> str:
    """Hash of everything a training run's result depends on; `ignore` names config keys
    a checkpoint stays valid across (e.g. the process count)."""
    settings = {k: v for k, v in config.model_dump(mode="json").items() if k not in ignore}
    blob = json.dumps(
        {
            "config": settings,
            "seed": seed,
            "task": task,
            "device": device,
            "inputs": {slot: sha256_tree(path) for slot, path in sorted(inputs.items())},
            "torch": torch.__version__,
            "format": FORMAT,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()
