"""`kiln sample SPEC -n 64 -o grid.png [--seed N]`: images from a GAN pipeline's exported
generator, as one PNG grid.

Uses only the export folder (`runs/<pipeline>/<export stage>/out`): `model_card.json` says
the noise size, then `model.onnx` runs under onnxruntime (numpy only, no torch import), or
`model.pt` under TorchScript when asked for with `--format torchscript` (never by default:
loading TorchScript runs the code it holds). The noise is numpy's seeded standard normal,
so both formats draw the same images for the same seed. The spec is read for the
pipeline's name and export stage (validation only).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from torchkiln.commands import AddCommand
from torchkiln.commands.exports import add_export_arguments, export_folder, exported_file
from torchkiln.errors import RunError, UsageError

MAX_SAMPLES = 4096


def register(add: AddCommand) -> None:
    p = add(
        "sample",
        cmd_sample,
        "Sample images from a GAN pipeline's exported generator into a PNG grid.",
    )
    p.add_argument(
        "spec", metavar="SPEC", help="the pipeline spec, e.g. pipelines/mnist_dcgan.yaml"
    )
    p.add_argument("-n", "--count", type=int, default=64, metavar="N", help="images (default 64)")
    p.add_argument(
        "-o", "--output", default="samples.png", metavar="FILE", help="PNG file to write"
    )
    p.add_argument("--seed", type=int, default=0, metavar="N", help="noise seed (default 0)")
    p.add_argument("--columns", type=int, metavar="N", help="grid columns (default: square)")
    add_export_arguments(p, "generator")


def _grid(images: Any, columns: int | None, pad: int = 2) -> Any:
    """uint8 N x C x H x W -> H' x W' (x C) tiles on white, upscaled when small."""
    import numpy as np

    n, c, h, w = images.shape
    columns = max(1, min(columns or math.ceil(math.sqrt(n)), n))
    rows = math.ceil(n / columns)
    canvas = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, c), 255, np.uint8)
    for i in range(n):
        r, col = divmod(i, columns)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        canvas[top : top + h, left : left + w] = images[i].transpose(1, 2, 0)
    scale = max(1, 96 // max(h, w)) if max(h, w) < 64 else 1
    if scale > 1:
        canvas = canvas.repeat(scale, axis=0).repeat(scale, axis=1)
    return canvas[:, :, 0] if c == 1 else canvas


def _run_onnx(path: Path, noise: Any) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run(None, {name: noise})[0]


def _run_torchscript(path: Path, noise: Any) -> Any:
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated upstream, still what we load
        model = torch.jit.load(str(path), map_location="cpu").eval()
    with torch.no_grad():
        return model(torch.from_numpy(noise)).numpy()


def cmd_sample(args: argparse.Namespace) -> int:
    import numpy as np

    if not 1 <= args.count <= MAX_SAMPLES:
        raise UsageError(f"-n must be between 1 and {MAX_SAMPLES} (got {args.count})")
    if args.columns is not None and args.columns < 1:
        raise UsageError(f"--columns must be at least 1 (got {args.columns})")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0 (got {args.seed})")
    spec = Path(args.spec)
    name, folder = export_folder(spec, args.stage, "to sample from")
    card_path = folder / "model_card.json"
    if not card_path.exists():
        raise RunError(
            f"pipeline {name!r} is not exported yet ({card_path.as_posix()} is missing); run "
            f"`kiln run {spec.as_posix()}` or `dvc repro` first"
        )
    card = json.loads(card_path.read_text(encoding="utf-8"))
    latent_dim = card.get("latent_dim")
    if not isinstance(latent_dim, int):
        raise UsageError(
            f"pipeline {name!r} exports a {card.get('task', '?')} model, not a generator; "
            "kiln sample needs a GAN pipeline (task: gan)"
        )
    chosen, path = exported_file(folder, args.format)
    noise = np.random.default_rng(args.seed).standard_normal(
        (args.count, latent_dim), dtype=np.float32
    )
    images = _run_onnx(path, noise) if chosen == "onnx" else _run_torchscript(path, noise)
    if images.ndim != 4:
        raise RunError(f"the generator returned shape {images.shape}, not N x C x H x W images")
    pixels = (np.clip(images, 0.0, 1.0) * 255).round().astype(np.uint8)
    from PIL import Image

    from torchkiln.io import atomic_write_bytes

    picture = Image.fromarray(_grid(pixels, args.columns))
    import io

    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=False)
    out = Path(args.output)
    atomic_write_bytes(out, buffer.getvalue())
    print(f"wrote {out.as_posix()}: {args.count} samples from {path.as_posix()} (seed {args.seed})")
    return 0
