"""Helpers for the end-to-end tests that drive the real `kiln run` in a temporary folder.

Each test works in its own folder (the cwd of every `kiln` it starts), writes small specs
there with `write_spec`, and inspects `runs/` and `.kiln/` afterwards. The subprocesses
use one torch thread each, so `pytest -n 2` on two cores does not oversubscribe the CPU.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from filelock import FileLock

#: The console script installed next to this interpreter (the venv's `kiln`).
KILN = Path(sys.executable).parent / "kiln"

#: Generous: the machine may be shared, and every `kiln run` pays for `import torch`.
TIMEOUT = 240


def kiln_env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONDONTWRITEBYTECODE": "1",
        "NO_COLOR": "1",
        "KILN_PROGRESS": "lines",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def kiln(
    *args: str | Path, cwd: Path, timeout: float = TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """`kiln ARGS...` in `cwd`; captures text output and never raises on a non-zero exit."""
    assert KILN.exists(), f"{KILN} missing: install the project (make test does)"
    return subprocess.run(
        [str(KILN), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=kiln_env(),
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """Assert a `kiln` run succeeded, showing its output when it did not."""
    assert result.returncode == 0, (
        f"kiln exited {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )
    return result


def failed(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """Assert a `kiln` run failed with `code` and a message, not a traceback; returns stderr."""
    output = result.stdout + result.stderr
    assert result.returncode == code, f"expected exit {code}, got {result.returncode}\n{output}"
    assert "Traceback" not in output, output
    assert "error:" in result.stderr, output
    return result.stderr


def write_spec(folder: Path, name: str, stages: dict[str, Any], **top: Any) -> Path:
    """Write `<folder>/<name>.yaml` with the given stages (seed 0 unless `top` says otherwise)."""
    spec = {"name": name, "task": "classification", "seed": 0, **top, "stages": stages}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, by POSIX path relative to it."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def shared_folder(
    factory: pytest.TempPathFactory, name: str, build: Callable[[Path], object]
) -> Path:
    """A folder that `build` fills once per test run, also across pytest-xdist workers
    (which share the parent of their temporary folders). Tests only read it or copy it."""
    root = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    folder, done = root / f"shared-{name}", root / f"shared-{name}.built"
    with FileLock(str(root / f"shared-{name}.lock")):
        if not done.exists():
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


def synthetic(num_classes: int = 4, per_class: int = 24, size: int = 8, **more: Any) -> dict:
    """A `synthetic` dataset block (seeded random class patterns)."""
    return {
        "name": "synthetic",
        "num_classes": num_classes,
        "per_class": per_class,
        "image_size": size,
        **more,
    }


def small_cnn(**more: Any) -> dict[str, Any]:
    return {"name": "small_cnn", "channels": [4, 8], "hidden": 16, **more}
