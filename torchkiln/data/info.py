"""The description of a dataset artifact that models, losses and metrics are built from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DatasetInfo:
    """Read from the dataset artifact's meta.json; light (no torch)."""

    modality: str
    task: str
    classes: tuple[str, ...]
    #: Per-example input shape without the batch axis: (C, H, W) for images, () for text.
    input_shape: tuple[int, ...]
    counts: dict[str, int]
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    #: Modality-specific facts (text: vocab_size, pad_index, max_length, tokenizer...).
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return self.input_shape[0] if self.input_shape else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "modality": self.modality,
            "task": self.task,
            "classes": list(self.classes),
            "input_shape": list(self.input_shape),
            "counts": dict(self.counts),
            "mean": list(self.mean),
            "std": list(self.std),
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DatasetInfo:
        return cls(
            modality=data["modality"],
            task=data["task"],
            classes=tuple(data["classes"]),
            input_shape=tuple(data["input_shape"]),
            counts=dict(data["counts"]),
            mean=tuple(data.get("mean", ())),
            std=tuple(data.get("std", ())),
            extra=dict(data.get("extra", {})),
        )
