"""Losses with typed parameters. Any other torch.nn loss works by name."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, PositiveFloat

from torchkiln.registry import LossConfig, losses


@losses.register
class CrossEntropyLoss(LossConfig):
    """Cross-entropy over class logits, with optional label smoothing and class weights."""

    name: Literal["CrossEntropyLoss"] = "CrossEntropyLoss"
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0
    """Mix this much of the uniform distribution into the targets."""
    class_weights: list[PositiveFloat] | Literal["balanced"] | None = None
    """One weight per class, or `balanced` (inverse train-split frequency)."""

    def build(self, info: Any) -> Any:
        import torch

        weight = None
        if self.class_weights == "balanced":
            counts = torch.tensor(info.extra["train_class_counts"], dtype=torch.float32)
            weight = counts.sum() / (len(counts) * counts.clamp_min(1))
        elif self.class_weights is not None:
            if len(self.class_weights) != info.num_classes:
                from torchkiln.errors import RunError

                raise RunError(
                    f"loss.class_weights has {len(self.class_weights)} values but the dataset "
                    f"has {info.num_classes} classes"
                )
            weight = torch.tensor(self.class_weights, dtype=torch.float32)
        return torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=self.label_smoothing)
