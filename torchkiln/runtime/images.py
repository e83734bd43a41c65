"""Image grids as PNG files (byte-stable: no timestamps, fixed layout)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import torch

from torchkiln.io import atomic_write_bytes


def grid(images: torch.Tensor, columns: int | None = None, pad: int = 2) -> torch.Tensor:
    """uint8 N x C x H x W -> one uint8 C x H' x W' image, tiles separated by `pad` pixels."""
    n, c, h, w = images.shape
    columns = columns or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / columns)
    canvas = torch.full(
        (c, rows * (h + pad) + pad, columns * (w + pad) + pad), 255, dtype=torch.uint8
    )
    for i in range(n):
        r, col = divmod(i, columns)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        canvas[:, top : top + h, left : left + w] = images[i]
    return canvas


def save_png(image: torch.Tensor, path: Path, scale: int = 1) -> None:
    """Write a uint8 C x H x W tensor as PNG, optionally upscaled (nearest) for small images."""
    from PIL import Image

    array = image.permute(1, 2, 0).numpy()
    picture = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=False)
    atomic_write_bytes(path, buffer.getvalue())


def save_grid(images: torch.Tensor, path: Path, columns: int | None = None) -> None:
    """A grid of uint8 images as PNG; small images are upscaled so the grid is readable."""
    side = max(images.shape[-2:])
    save_png(grid(images, columns), path, scale=max(1, 96 // max(side, 1)) if side < 64 else 1)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> uint8."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)
