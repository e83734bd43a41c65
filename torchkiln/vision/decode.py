"""Decoding one image file as load_data does, for load_data and for `kiln predict`: PIL and
NumPy only (no torch), so predicting with an ONNX export needs neither torch nor torchkiln's
training code.

A file's pixel count is checked before its pixels are decoded: a small file that claims
to be enormous (a decompression bomb) is refused with a clear message, not decoded.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

#: Largest image (width x height) read: well above any photo a training set holds.
MAX_PIXELS = 64_000_000
#: PIL modes that are one channel.
GRAY_MODES = ("1", "L", "I", "I;16", "F")


class ImageTooLarge(ValueError):
    """An image whose header claims more pixels than `MAX_PIXELS`."""


def _open(path: Path) -> Any:
    """`PIL.Image.open`, with PIL's own bomb check in kiln's words: PIL refuses an image past
    twice its limit (179M pixels) before kiln can look, and warns above 89M; kiln's limit
    is lower, so the warning says nothing more."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except Image.DecompressionBombError as exc:
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(claimed.group(1)):,} pixels" if claimed else "its size"
        raise ImageTooLarge(
            f"{size} is more than the {MAX_PIXELS:,} kiln reads (a decompression bomb?)"
        ) from None


def channels_of(path: Path) -> int:
    """1 for a grayscale file, else 3 (what `channels:` defaults to)."""
    with _open(path) as probe:
        return 1 if probe.mode in GRAY_MODES else 3


def decode_image(path: Path, channels: int, size: tuple[int, int] | None) -> Any:
    """One image as a uint8 NumPy array, C x H x W: converted to `channels` (1: grayscale,
    3: RGB), resized with antialiasing to `size` (height, width) when given and different."""
    import numpy as np
    from PIL import Image

    with _open(path) as img:
        if img.width * img.height > MAX_PIXELS:
            raise ImageTooLarge(
                f"{img.width}x{img.height} pixels is more than the {MAX_PIXELS:,} kiln reads "
                "(a decompression bomb?)"
            )
        img.load()
        img = img.convert("L" if channels == 1 else "RGB")
        if size is not None and (img.height, img.width) != size:
            img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        array = np.array(img, dtype=np.uint8)  # a writable copy (torch refuses read-only)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
