"""The adversarial objectives (imports torch).

An objective has:
- `discriminator_loss(real, fake)`: from D's outputs on real and generated images (shape N);
- `penalty(discriminator, real_inputs, fake_inputs)`: an extra D term needing D itself
  (WGAN-GP's gradient penalty), or None;
- `generator_loss(fake)`: from D's outputs on generated images;
- `score(outputs)`: what the per-epoch diagnostics report as D(x) and D(G(z)): the
  probability "real" for BCE, the raw critic value otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BceObjective:
    """Non-saturating GAN loss, with optional one-sided label smoothing."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.smoothing = label_smoothing

    def discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        # BCE(real, 1 - s) + BCE(fake, 0), written with softplus (stable on logits)
        s = self.smoothing
        real_term = (1 - s) * F.softplus(-real) + s * F.softplus(real)
        return real_term.mean() + F.softplus(fake).mean()

    def generator_loss(self, fake: torch.Tensor) -> torch.Tensor:
        return F.softplus(-fake).mean()  # -log sigmoid(D(G(z))): non-saturating

    def penalty(
        self, discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor
    ) -> torch.Tensor | None:
        return None

    def score(self, outputs: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(outputs)


class HingeObjective:
    def discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()

    def generator_loss(self, fake: torch.Tensor) -> torch.Tensor:
        return -fake.mean()

    def penalty(
        self, discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor
    ) -> torch.Tensor | None:
        return None

    def score(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs


def gradient_penalty(
    discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor
) -> torch.Tensor:
    """mean over the batch of (||grad_x D(x_hat)||_2 - 1)^2, x_hat uniform on real-fake lines."""
    alpha = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), device=real.device)
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(mixed).sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


class WganGpObjective:
    def __init__(self, gp_weight: float = 10.0, drift: float = 0.0) -> None:
        self.gp_weight, self.drift = gp_weight, drift

    def discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        loss = fake.mean() - real.mean()
        if self.drift:
            loss = loss + self.drift * (real**2).mean()
        return loss

    def generator_loss(self, fake: torch.Tensor) -> torch.Tensor:
        return -fake.mean()

    def penalty(
        self, discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor
    ) -> torch.Tensor | None:
        if not self.gp_weight:
            return None
        return self.gp_weight * gradient_penalty(discriminator, real, fake)

    def score(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs
