"""Optimizers with typed, bounded parameters. Any other torch.optim class works by name."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat

from torchkiln.registry import OptimizerConfig, optimizers

Beta = Annotated[float, Field(ge=0, lt=1)]
Betas = Annotated[list[Beta], Field(min_length=2, max_length=2)]


@optimizers.register
class SGD(OptimizerConfig):
    """Stochastic gradient descent, with optional (Nesterov) momentum."""

    name: Literal["SGD"] = "SGD"
    lr: PositiveFloat = 0.01
    """Learning rate."""
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0
    """Momentum factor."""
    nesterov: bool = False
    """Use Nesterov momentum (needs momentum > 0)."""
    weight_decay: NonNegativeFloat = 0.0
    """L2 penalty."""

    def build(self, params: Any) -> Any:
        import torch

        return torch.optim.SGD(
            params,
            lr=self.lr,
            momentum=self.momentum,
            nesterov=self.nesterov,
            weight_decay=self.weight_decay,
        )


@optimizers.register
class Adam(OptimizerConfig):
    """Adam."""

    name: Literal["Adam"] = "Adam"
    lr: PositiveFloat = 1e-3
    """Learning rate."""
    betas: Betas = Field(default_factory=lambda: [0.9, 0.999])
    """Coefficients for the running averages of the gradient and its square."""
    eps: PositiveFloat = 1e-8
    """Added to the denominator for numerical stability."""
    weight_decay: NonNegativeFloat = 0.0
    """L2 penalty (coupled; prefer AdamW for decoupled decay)."""

    def build(self, params: Any) -> Any:
        import torch

        return torch.optim.Adam(
            params,
            lr=self.lr,
            betas=tuple(self.betas),
            eps=self.eps,
            weight_decay=self.weight_decay,
        )


@optimizers.register
class AdamW(OptimizerConfig):
    """Adam with decoupled weight decay."""

    name: Literal["AdamW"] = "AdamW"
    lr: PositiveFloat = 1e-3
    """Learning rate."""
    betas: Betas = Field(default_factory=lambda: [0.9, 0.999])
    """Coefficients for the running averages of the gradient and its square."""
    eps: PositiveFloat = 1e-8
    """Added to the denominator for numerical stability."""
    weight_decay: NonNegativeFloat = 0.01
    """Decoupled weight decay."""

    def build(self, params: Any) -> Any:
        import torch

        return torch.optim.AdamW(
            params,
            lr=self.lr,
            betas=tuple(self.betas),
            eps=self.eps,
            weight_decay=self.weight_decay,
        )


@optimizers.register
class RMSprop(OptimizerConfig):
    """RMSprop."""

    name: Literal["RMSprop"] = "RMSprop"
    lr: PositiveFloat = 0.01
    """Learning rate."""
    alpha: Annotated[float, Field(gt=0, lt=1)] = 0.99
    """Smoothing constant."""
    eps: PositiveFloat = 1e-8
    """Added to the denominator for numerical stability."""
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0
    """Momentum factor."""
    weight_decay: NonNegativeFloat = 0.0
    """L2 penalty."""

    def build(self, params: Any) -> Any:
        import torch

        return torch.optim.RMSprop(
            params,
            lr=self.lr,
            alpha=self.alpha,
            eps=self.eps,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
        )
