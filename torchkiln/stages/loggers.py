"""`loggers:` of a training stage: where else its progress goes (besides history.json).

`tensorboard` writes event files under `.kiln/tensorboard/<pipeline>/<stage>/` (rank 0
only; not DVC outputs, since their bytes are never reproducible). It needs the optional
extra: `pip install 'torchkiln[tensorboard]'`.
"""

from __future__ import annotations

import importlib.util
from typing import Literal

Logger = Literal["tensorboard"]

#: logger -> (the package it needs, how to install it)
NEEDS: dict[str, tuple[str, str]] = {
    "tensorboard": ("tensorboard", "pip install 'torchkiln[tensorboard]'"),
}


def installed(package: str) -> bool:
    """Whether a package can be imported (found without importing it)."""
    return importlib.util.find_spec(package) is not None


def logger_problems(loggers: list[str]) -> list[tuple[tuple[str | int, ...], str]]:
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for i, name in enumerate(loggers):
        package, how = NEEDS[name]
        if not installed(package):
            problems.append(
                (("loggers", i), f"the {name} logger needs the {package} package: {how}")
            )
    return problems
