"""A shipped list of torch classes and their parameter names, so validation needs no torch.

The generic adapters (any `torch.optim` optimizer, any `lr_scheduler`, any `torch.nn`
loss, any `torchvision.transforms.v2` transform) check names and keyword arguments
against this catalog at validation time, without importing torch; at run time the
real signature binds them. `python -m torchkiln.catalog` regenerates it from the
installed torch, and a test fails when the two disagree.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

CATALOG_FILE = Path(__file__).with_name("torch_api.json")

#: catalog section -> (module path, parameters torchkiln supplies itself, class filter)
SECTIONS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "optimizer": ("torch.optim", ("params",), "optimizer"),
    "scheduler": ("torch.optim.lr_scheduler", ("optimizer",), "scheduler"),
    "loss": ("torch.nn", (), "loss"),
    "transform": ("torchvision.transforms.v2", (), "transform"),
}


@cache
def catalog() -> dict[str, dict[str, Any]]:
    """`{section: {ClassName: {"params": [...], "required": [...], "var_kwargs": bool}}}`."""
    return json.loads(CATALOG_FILE.read_text(encoding="utf-8"))


def section(kind: str) -> dict[str, dict[str, Any]]:
    return catalog().get(kind, {})
