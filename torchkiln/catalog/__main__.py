"""Regenerate torch_api.json from the installed torch/torchvision: `python -m torchkiln.catalog`."""

from __future__ import annotations

import sys

from torchkiln.catalog import CATALOG_FILE
from torchkiln.catalog.generate import build_catalog, dump

if __name__ == "__main__":
    CATALOG_FILE.write_text(dump(build_catalog()), encoding="utf-8")
    print(f"wrote {CATALOG_FILE}", file=sys.stderr)
