"""The torch modules behind the GAN model configs (imports torch).

A GAN model is one `nn.Module` holding `.generator` and `.discriminator`, so build_model,
weight loading, freezing and the safetensors artifact treat it like any other model.

Conventions every GAN model here follows (and a plugin's GAN model must follow):
- `generator(noise)` maps float32 noise `N x latent_dim` to images in [0, 1], `N x C x H x W`
  with the dataset's shape: pixel space, so the exported generator is directly viewable.
- `discriminator(x)` maps *preprocessed* images (what the modality's preprocessor makes of
  real images: normalised) to one logit/score per image, shape `N`.
- `latent_dim` and `image_shape` attributes say what the generator takes and makes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from torchkiln.data.info import DatasetInfo


class GanModel(nn.Module):
    """A generator/discriminator pair; `forward(noise)` samples images in [0, 1]."""

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        latent_dim: int,
        image_shape: tuple[int, ...],
    ) -> None:
        super().__init__()
        self.generator = generator
        self.discriminator = discriminator
        self.latent_dim = latent_dim
        self.image_shape = tuple(image_shape)

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        return self.generator(noise)


def _dcgan_init(module: nn.Module) -> None:
    """The DCGAN paper's initialisation: N(0, 0.02) weights, BN scales N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class _ToPixels(nn.Module):
    """tanh output in [-1, 1] -> [0, 1], cropped (centred) to the dataset's image size."""

    def __init__(self, height: int, width: int, made: tuple[int, int]) -> None:
        super().__init__()
        self.height, self.width = height, width
        self.top = (made[0] - height) // 2
        self.left = (made[1] - width) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, self.top : self.top + self.height, self.left : self.left + self.width]
        return torch.tanh(x) * 0.5 + 0.5


class DcganGenerator(nn.Module):
    """noise -> linear -> base map -> (transposed conv x2 upsampling) per width -> image.

    With k widths the base map is ceil(H / 2^k) x ceil(W / 2^k); the result is centre-cropped
    to H x W, so any size works (28 = 7 * 4 needs no crop with two widths).
    """

    def __init__(self, cfg: Any, info: DatasetInfo) -> None:
        super().__init__()
        channels, height, width = info.input_shape
        widths = list(cfg.widths)
        k = len(widths)
        self.base = (math.ceil(height / 2**k), math.ceil(width / 2**k))
        made = (self.base[0] * 2**k, self.base[1] * 2**k)
        batch_norm = cfg.g_norm == "batch"
        self.project = nn.Sequential(
            nn.Linear(cfg.latent_dim, widths[0] * self.base[0] * self.base[1], bias=not batch_norm),
            nn.BatchNorm1d(widths[0] * self.base[0] * self.base[1])
            if batch_norm
            else nn.Identity(),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        for i, w in enumerate(widths):
            last = i == k - 1
            out = channels if last else widths[i + 1]
            layers.append(nn.ConvTranspose2d(w, out, 4, 2, 1, bias=last or not batch_norm))
            if not last:
                if batch_norm:
                    layers.append(nn.BatchNorm2d(out))
                layers.append(nn.ReLU(inplace=True))
        self.upsample = nn.Sequential(*layers)
        self.to_pixels = _ToPixels(height, width, made)
        self.width0 = widths[0]

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        x = self.project(noise).view(-1, self.width0, self.base[0], self.base[1])
        return self.to_pixels(self.upsample(x))


def _d_norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":  # per-example (one group): safe with a gradient penalty
        return nn.GroupNorm(1, channels)
    return nn.Identity()


class DcganDiscriminator(nn.Module):
    """image -> strided convs (each halves the size, LeakyReLU 0.2) -> linear -> one score."""

    def __init__(self, cfg: Any, info: DatasetInfo) -> None:
        super().__init__()
        channels, height, width = info.input_shape
        widths = list(cfg.d_widths) if cfg.d_widths else list(reversed(cfg.widths))
        spectral = cfg.d_norm == "spectral"
        layers: list[nn.Module] = []
        for i, w in enumerate(widths):
            conv = nn.Conv2d(
                channels, w, 4, 2, 1, bias=i == 0 or cfg.d_norm in ("none", "spectral")
            )
            layers.append(nn.utils.parametrizations.spectral_norm(conv) if spectral else conv)
            if i > 0:
                layers.append(_d_norm(cfg.d_norm, w))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            if cfg.d_dropout:
                layers.append(nn.Dropout(cfg.d_dropout))
            channels = w
            height, width = max(1, height // 2), max(1, width // 2)
        self.features = nn.Sequential(*layers)
        head = nn.Linear(channels * height * width, 1)
        self.head = nn.utils.parametrizations.spectral_norm(head) if spectral else head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1)).squeeze(1)


def dcgan(cfg: Any, info: DatasetInfo) -> GanModel:
    generator = DcganGenerator(cfg, info)
    discriminator = DcganDiscriminator(cfg, info)
    _dcgan_init(generator)
    _dcgan_init(discriminator)
    return GanModel(generator, discriminator, cfg.latent_dim, info.input_shape)


class MlpGenerator(nn.Module):
    def __init__(self, cfg: Any, info: DatasetInfo) -> None:
        super().__init__()
        self.shape = tuple(info.input_shape)
        layers: list[nn.Module] = []
        width = cfg.latent_dim
        for hidden in cfg.hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
            width = hidden
        layers.append(nn.Linear(width, math.prod(self.shape)))
        self.net = nn.Sequential(*layers)

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(noise)).view(-1, *self.shape)


class MlpDiscriminator(nn.Module):
    def __init__(self, cfg: Any, info: DatasetInfo) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(info.input_shape)
        for hidden in reversed(cfg.hidden):
            layers += [nn.Linear(width, hidden), nn.LeakyReLU(0.2, inplace=True)]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


def mlp_gan(cfg: Any, info: DatasetInfo) -> GanModel:
    return GanModel(
        MlpGenerator(cfg, info), MlpDiscriminator(cfg, info), cfg.latent_dim, info.input_shape
    )
