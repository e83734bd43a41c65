"""Run the real `kiln` console script of this venv as a subprocess (shared by tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The console script installed next to this interpreter (the venv's `kiln`).
KILN = Path(sys.executable).parent / "kiln"

Kiln = Callable[..., subprocess.CompletedProcess[str]]


def run_kiln(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`kiln ARGS...` in `cwd`, capturing text output; never raises on a non-zero exit."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "NO_COLOR": "1"}
    return subprocess.run(
        [str(KILN), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
