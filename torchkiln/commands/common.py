"""What several commands share: the default specs, and the tools installed beside kiln."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from torchkiln.errors import UsageError

SPEC_GLOBS = ("*.yaml", "*.yml")


def default_specs(folder: Path = Path("pipelines")) -> list[Path]:
    """Every spec under `pipelines/`, sorted."""
    return sorted(p for pattern in SPEC_GLOBS for p in folder.glob(pattern))


def specs_or_default(given: Sequence[str]) -> list[Path]:
    """The specs named on the command line, else every spec under `pipelines/`."""
    if given:
        return [Path(s) for s in given]
    specs = default_specs()
    if not specs:
        raise UsageError("no specs given and none found in pipelines/*.yaml")
    return specs


def tool_path(name: str) -> str:
    """A console script installed beside this Python (the venv's dvc), else from PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise UsageError(f"`{name}` is not installed (pip install {name})")
    return found


def env_with_own_bin() -> dict[str, str]:
    """The environment with this Python's bin folder first on PATH, so DVC finds `kiln`."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env
