"""GAN models: generator/discriminator pairs. Configs only; the modules live in gan/nets.py."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, PositiveInt

from torchkiln.data.info import DatasetInfo
from torchkiln.registry import ModelConfig, models

LatentDim = Annotated[int, Field(ge=1, le=4096)]
Widths = Annotated[list[PositiveInt], Field(min_length=1, max_length=6)]


class GanModelConfig(ModelConfig):
    """Base of GAN models: `build(info)` returns a module with `.generator`, `.discriminator`,
    `latent_dim` and `image_shape` (see gan/nets.py for the conventions)."""

    tasks: ClassVar[frozenset[str]] = frozenset({"gan"})
    modalities: ClassVar[frozenset[str]] = frozenset({"image"})


@models.register
class Dcgan(GanModelConfig):
    """DCGAN: transposed-conv generator, strided-conv discriminator; any image size."""

    name: Literal["dcgan"] = "dcgan"
    latent_dim: LatentDim = 100
    """Size of the generator's input noise vector."""
    widths: Widths = Field(default_factory=lambda: [128, 64])
    """Generator channels from the smallest feature map up; each doubles the size (two
    widths: 7x7 -> 14x14 -> 28x28 for MNIST). Larger images want more widths."""
    d_widths: Widths | None = None
    """Discriminator channels, one strided conv each (default: `widths` reversed)."""
    g_norm: Literal["batch", "none"] = "batch"
    """Normalisation in the generator."""
    d_norm: Literal["batch", "layer", "spectral", "none"] = "batch"
    """Normalisation in the discriminator; use layer, spectral or none with wgan_gp
    (its gradient penalty is per example, which BatchNorm breaks)."""
    d_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    """Dropout after each discriminator block (slows a discriminator that wins too fast)."""

    def build(self, info: DatasetInfo) -> Any:
        from torchkiln.gan import nets

        return nets.dcgan(self, info)


@models.register
class MlpGan(GanModelConfig):
    """A tiny fully connected GAN (for tests and smoke runs)."""

    name: Literal["mlp_gan"] = "mlp_gan"
    latent_dim: LatentDim = 16
    """Size of the generator's input noise vector."""
    hidden: Annotated[list[PositiveInt], Field(min_length=1, max_length=4)] = Field(
        default_factory=lambda: [64]
    )
    """Hidden widths of the generator (the discriminator uses them reversed)."""

    def build(self, info: DatasetInfo) -> Any:
        from torchkiln.gan import nets

        return nets.mlp_gan(self, info)
