"""A labelled grid of misclassified images: each tile shows `actual -> predicted`."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from torchkiln.io import atomic_write_bytes

TILE = 96
LABEL = 14


def mistakes_grid(
    split: Any,
    wrong: torch.Tensor,
    predicted: torch.Tensor,
    classes: list[str],
    path: Path,
    columns: int = 6,
) -> None:
    from PIL import Image, ImageDraw

    count = len(wrong)
    rows = max(1, -(-count // columns))
    labels = []
    if count:
        targets = split.targets[wrong.to(split.targets.device)].cpu()
        labels = [
            f"{classes[int(targets[k])]} -> {classes[int(predicted[wrong[k]])]}"
            for k in range(count)
        ]
    # each column is as wide as its longest label, so class names are never cut short
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = max([TILE] + [int(measure.textlength(text)) + 4 for text in labels])
    sheet = Image.new("RGB", (columns * width, rows * (TILE + LABEL)), "white")
    draw = ImageDraw.Draw(sheet)
    if count:
        images = split.batch(wrong)[0][0].cpu()
        for k in range(count):
            array = images[k].permute(1, 2, 0).numpy()
            tile = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).convert("RGB")
            tile = tile.resize((TILE, TILE), Image.NEAREST)
            r, c = divmod(k, columns)
            sheet.paste(tile, (c * width + (width - TILE) // 2, r * (TILE + LABEL)))
            draw.text((c * width + 2, r * (TILE + LABEL) + TILE + 1), labels[k], fill="black")
    else:
        draw.text((4, TILE // 2), "no mistakes", fill="black")
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
