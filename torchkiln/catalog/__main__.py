"""Regenerate torch_api.json from the installed torch/torchvision: `python -m torchkiln.catalog`."""

from __future__ import annotations

import sys

from torchkiln.catalog import CATALOG_FILE
from torchkiln.catalog.generate import build_catalog, dump
from torchkiln.io import atomic_write_text

if __name__ == "__main__":
    atomic_write_text(CATALOG_FILE, dump(build_catalog()))
    print(f"wrote {CATALOG_FILE}", file=sys.stderr)
