"""The torch modules behind the image model configs (imports torch)."""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from torchkiln.data.info import DatasetInfo
from torchkiln.errors import RunError

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


def mlp(cfg: Any, info: DatasetInfo) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(info.input_shape)
    for hidden in cfg.hidden:
        layers += [nn.Linear(width, hidden), _ACTIVATIONS[cfg.activation]()]
        if cfg.dropout:
            layers.append(nn.Dropout(cfg.dropout))
        width = hidden
    layers.append(nn.Linear(width, info.num_classes))
    return nn.Sequential(*layers)


class SmallCnn(nn.Module):
    def __init__(self, cfg: Any, info: DatasetInfo) -> None:
        super().__init__()
        channels, height, width = info.input_shape
        blocks: list[nn.Module] = []
        for out in cfg.channels:
            for _ in range(cfg.convs_per_block):
                blocks.append(
                    nn.Conv2d(
                        channels,
                        out,
                        cfg.kernel_size,
                        padding=cfg.kernel_size // 2,
                        bias=not cfg.batch_norm,
                    )
                )
                if cfg.batch_norm:
                    blocks.append(nn.BatchNorm2d(out))
                blocks.append(nn.ReLU(inplace=True))
                channels = out
            if min(height, width) >= 2:
                blocks.append(nn.MaxPool2d(2) if cfg.pool == "max" else nn.AvgPool2d(2))
                height, width = height // 2, width // 2
        self.features = nn.Sequential(*blocks)
        flat = channels * height * width
        head: list[nn.Module] = [nn.Flatten()]
        if cfg.hidden:
            head += [nn.Linear(flat, cfg.hidden), nn.ReLU(inplace=True)]
            flat = cfg.hidden
        if cfg.dropout:
            head.append(nn.Dropout(cfg.dropout))
        head.append(nn.Linear(flat, info.num_classes))
        self.head = nn.Sequential(*head)

    def forward(self, x: Any) -> Any:
        return self.head(self.features(x))


def small_cnn(cfg: Any, info: DatasetInfo) -> nn.Module:
    return SmallCnn(cfg, info)


class _GrayToRgb(nn.Module):
    """Repeat a single channel three times, so ImageNet-shaped models take grayscale."""

    def forward(self, x: Any) -> Any:
        return x.expand(-1, 3, -1, -1)


def torchvision_model(cfg: Any, info: DatasetInfo) -> nn.Module:
    import torchvision.models

    arch = cfg.name.split("/", 1)[1]
    try:
        model = torchvision.models.get_model(
            arch, weights=None, num_classes=info.num_classes, **cfg.kwargs
        )
    except TypeError as exc:
        raise RunError(f"torchvision model {arch!r} rejected its arguments: {exc}") from exc
    channels = info.in_channels
    if channels == 3:
        return model
    if channels == 1:
        return nn.Sequential(_GrayToRgb(), model)
    return nn.Sequential(nn.Conv2d(channels, 3, kernel_size=1), model)
