"""`kiln predict SPEC IMAGE... | DIR` for image classifiers: each file decoded as load_data
decodes (grayscale or RGB as the model was trained, resized to its input size), then the
exported model (normalisation is inside it) under onnxruntime (no torch) or TorchScript.
Prints the top classes with their probabilities, or JSON for tools."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torchkiln.errors import RunError, UsageError
from torchkiln.vision.decode import ImageTooLarge, decode_image

#: What counts as an image inside a folder given on the command line.
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
BATCH = 64


def image_files(given: list[str]) -> list[Path]:
    """The files named, and the images inside the folders named (sorted, recursively)."""
    files: list[Path] = []
    for entry in given:
        path = Path(entry)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in EXTENSIONS and not p.name.startswith(".")
            )
            if not found:
                raise UsageError(f"{entry}: a folder with no images ({', '.join(EXTENSIONS)})")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise UsageError(f"{entry}: no such file or folder")
    if not files:
        raise UsageError("give image files or folders to classify: kiln predict SPEC IMAGE...")
    return files


def runner(fmt: str, path: Path) -> Callable[[Any], Any]:
    """float32 images in [0, 1] (N x C x H x W, numpy) -> logits (numpy)."""
    if fmt == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda images: session.run(None, {name: images})[0]
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated upstream; still works
        module = torch.jit.load(str(path), map_location="cpu")

    def run(images: Any) -> Any:
        with torch.no_grad():
            return module(torch.from_numpy(images)).numpy()

    return run


def softmax(logits: Any) -> Any:
    import numpy as np

    shifted = np.asarray(logits, dtype=np.float64)
    shifted = shifted - shifted.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def predict_images(
    args: argparse.Namespace, folder: Path, card: dict[str, Any], fmt: str, path: Path
) -> int:
    import numpy as np

    if args.top < 1:
        raise UsageError("--top must be at least 1")
    if args.file:
        raise UsageError("an image model classifies files: kiln predict SPEC IMAGE... | DIR")
    files = image_files(list(args.inputs))
    classes: list[str] = list(card["classes"])
    shape = card["input"]["shape"]
    if len(shape) != 3:
        raise RunError(
            f"{folder.as_posix()}: the model card's input shape {shape} is not C x H x W"
        )
    channels, size = int(shape[0]), (int(shape[1]), int(shape[2]))
    run = runner(fmt, path)
    k = min(args.top, len(classes))
    unreadable = 0
    for start in range(0, len(files), BATCH):
        batch, pixels = [], []
        for file in files[start : start + BATCH]:
            try:
                pixels.append(decode_image(file, channels, size))
            except Exception as exc:  # PIL raises many types for files that are not images
                # one bad file costs its own line, not the others' results
                why = str(exc) if isinstance(exc, ImageTooLarge) else f"{type(exc).__name__}: {exc}"
                print(f"error: cannot read image {file.as_posix()}: {why}", file=sys.stderr)
                unreadable += 1
                continue
            batch.append(file)
        if not batch:
            continue
        images = np.stack(pixels).astype(np.float32) / 255.0
        for file, row in zip(batch, softmax(run(images)), strict=True):
            best = sorted(range(len(row)), key=lambda i: (-row[i], i))[:k]
            ranked = [(classes[i], float(row[i])) for i in best]
            if args.json:
                record: dict[str, Any] = {
                    "file": file.as_posix(),
                    "label": ranked[0][0],
                    "probability": round(ranked[0][1], 6),
                }
                if k > 1:
                    record["top"] = [{"label": c, "probability": round(p, 6)} for c, p in ranked]
                print(json.dumps(record, ensure_ascii=False, sort_keys=True))
            else:
                shown = "  ".join(f"{c}\t{p:.4f}" for c, p in ranked)
                print(f"{shown}\t{file.as_posix()}")
    if unreadable:
        raise RunError(f"{unreadable} of {len(files)} file(s) could not be read as images")
    return 0
