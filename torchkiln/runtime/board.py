"""TensorBoard event files for a training stage (`train.loggers: [tensorboard]`).

Written by rank 0 only, under `.kiln/tensorboard/<pipeline>/<stage>/`: not DVC outputs,
since event files carry timestamps and are never byte-reproducible. The engine hands over
the per-step losses at the points where it syncs anyway (the non-finite check), so
logging adds no host sync per step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

#: Where event files go, per pipeline and stage (beside .kiln/scratch).
ROOT = Path(".kiln") / "tensorboard"


class Board:
    """One run's TensorBoard writer."""

    def __init__(self, pipeline: str, stage: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.folder = ROOT / pipeline / stage
        self.writer = SummaryWriter(log_dir=str(self.folder))

    def losses(self, first_step: int, values: torch.Tensor) -> None:
        """The training loss of consecutive steps, from global step `first_step`."""
        for offset, value in enumerate(values.detach().float().cpu().tolist()):
            self.writer.add_scalar("step/loss", value, first_step + offset)

    def epoch(self, record: dict[str, Any]) -> None:
        """An epoch's history record: losses, metrics, learning rates."""
        epoch = int(record["epoch"])
        for key, value in record.items():
            if key != "epoch" and isinstance(value, int | float):
                group = "lr" if key.startswith("lr") else "epoch"
                self.writer.add_scalar(f"{group}/{key}", value, epoch)

    def images(self, tag: str, images: torch.Tensor, step: int) -> None:
        """uint8 images, N x C x H x W."""
        self.writer.add_images(tag, images.detach().cpu(), step, dataformats="NCHW")

    def hparams(self, settings: dict[str, Any], metrics: dict[str, Any]) -> None:
        """The stage's settings beside its final metrics (TensorBoard's HPARAMS tab)."""
        flat = {
            k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in settings.items()
        }
        numbers = {f"hparam/{k}": v for k, v in metrics.items() if isinstance(v, int | float)}
        self.writer.add_hparams(flat, numbers, run_name=".")

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


def flat_settings(config: Any) -> dict[str, Any]:
    """A stage config as dotted keys (TensorBoard hparams are flat)."""
    out: dict[str, Any] = {}

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{prefix}.{key}" if prefix else str(key))
        elif value is not None:
            out[prefix] = value

    walk(config.model_dump(mode="json", exclude={"uses", "inputs"}), "")
    return out
