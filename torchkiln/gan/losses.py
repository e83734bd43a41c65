"""Adversarial objectives: a registry kind of its own (`kiln list gan_loss`), because a GAN
loss is a pair (discriminator loss, generator loss) plus optional penalties, not one
`nn.Module` on (outputs, targets).

A plugin adds one like any component:

    @gan_losses.register
    class LeastSquares(GanLossConfig):
        name: Literal["lsgan"] = "lsgan"
        def build(self): return MyObjective()   # discriminator_loss / generator_loss / score

Configs are light; the torch code lives in gan/objectives.py.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, NonNegativeFloat

from torchkiln.registry.component import Component
from torchkiln.registry.registry import Registry


class GanLossConfig(Component):
    """Builds an adversarial objective (`build()`): see gan/objectives.py for the interface."""

    #: Whether "discriminator loss near 0 while the generator loss climbs" means the
    #: discriminator has won (true for BCE and hinge; a WGAN critic loss has no floor).
    divergence_check: ClassVar[bool] = True
    #: Whether the discriminator step needs gradients with respect to its inputs.
    needs_input_grad: ClassVar[bool] = False

    @abstractmethod
    def build(self) -> Any:
        """The objective (see gan/objectives.py): discriminator_loss, generator_loss, score,
        penalty."""

    def d_loss_minimum(self) -> float:
        """The smallest discriminator loss this objective can reach (a perfect D); the
        divergence check measures "near 0" from here."""
        return 0.0


gan_losses: Registry[type[GanLossConfig]] = Registry(
    "gan_loss", "An adversarial objective for train_gan (discriminator and generator losses)."
)


@gan_losses.register
class NonSaturatingBce(GanLossConfig):
    """The non-saturating GAN loss (binary cross-entropy on logits; G maximises log D(G(z)))."""

    name: Literal["bce"] = "bce"
    label_smoothing: Annotated[float, Field(ge=0, lt=0.5)] = 0.0
    """One-sided label smoothing: real images get target 1 - label_smoothing (fakes keep 0)."""

    def build(self) -> Any:
        from torchkiln.gan.objectives import BceObjective

        return BceObjective(self.label_smoothing)

    def d_loss_minimum(self) -> float:
        # a smoothed real target 1 - s leaves the binary entropy of s even for a perfect D
        s = self.label_smoothing
        return 0.0 if s == 0 else float(-(1 - s) * math.log(1 - s) - s * math.log(s))


@gan_losses.register
class Hinge(GanLossConfig):
    """The hinge loss (SAGAN/BigGAN): D minimises relu(1 - D(x)) + relu(1 + D(G(z)))."""

    name: Literal["hinge"] = "hinge"

    def build(self) -> Any:
        from torchkiln.gan.objectives import HingeObjective

        return HingeObjective()


@gan_losses.register
class WganGp(GanLossConfig):
    """Wasserstein loss with a gradient penalty (WGAN-GP); use n_critic 5 and no BatchNorm in D."""

    name: Literal["wgan_gp"] = "wgan_gp"
    divergence_check: ClassVar[bool] = False
    needs_input_grad: ClassVar[bool] = True
    gp_weight: NonNegativeFloat = 10.0
    """Weight of the penalty (||grad D(x_hat)|| - 1)^2 on random interpolates x_hat."""
    drift: NonNegativeFloat = 0.0
    """Weight of D(x)^2 on real images, keeping critic scores near 0 (ProGAN uses 0.001)."""

    def build(self) -> Any:
        from torchkiln.gan.objectives import WganGpObjective

        return WganGpObjective(self.gp_weight, self.drift)
