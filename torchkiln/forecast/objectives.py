"""Forecasting losses (torch): outputs [B, H, C, Q] against targets [B, H, C], scaled."""

from __future__ import annotations

import torch
from torch import nn

from torchkiln.errors import RunError


class PointLoss(nn.Module):
    """MSE, MAE or Huber on a point forecast (one output per step)."""

    def __init__(self, kind: str, delta: float = 1.0) -> None:
        super().__init__()
        self.kind, self.delta = kind, delta

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if outputs.shape[-1] != 1:
            raise RunError(
                f"loss {self.kind} trains a point forecast, but the model predicts "
                f"{outputs.shape[-1]} quantiles; use loss pinball (the default for it)"
            )
        predicted = outputs[..., 0]
        if self.kind == "mse":
            return nn.functional.mse_loss(predicted, targets)
        if self.kind == "mae":
            return nn.functional.l1_loss(predicted, targets)
        return nn.functional.huber_loss(predicted, targets, delta=self.delta)


class PinballLoss(nn.Module):
    """Mean over quantiles q of max(q * e, (q - 1) * e), e = actual - predicted quantile."""

    def __init__(self, quantiles: list[float]) -> None:
        super().__init__()
        self.register_buffer("levels", torch.tensor(quantiles, dtype=torch.float32))

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if outputs.shape[-1] != self.levels.numel():
            raise RunError(
                f"the model predicts {outputs.shape[-1]} values per step but the pinball loss "
                f"has {self.levels.numel()} quantiles"
            )
        error = targets.unsqueeze(-1) - outputs
        return torch.maximum(self.levels * error, (self.levels - 1) * error).mean()
