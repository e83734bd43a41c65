"""The one helper module for tests that drive the real command-line tools: `kiln`, and for
the end-to-end tests `dvc`, `git` and `gto`, each as a subprocess in a folder of its own.

Import from here, never from a `conftest` (tests/conftest.py and tests/e2e/conftest.py are
ambiguous as module names). Every subprocess gets the same environment: this venv's `bin`
first on PATH (so `dvc repro` finds this `kiln`), one torch thread (`pytest -n 2` on two
cores does not oversubscribe the CPU), progress as plain lines, no colour, no analytics,
a git identity. Nothing here raises on a non-zero exit unless asked: `ok()` and `failed()`
assert the outcome and show the output when it is not the expected one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from filelock import FileLock

ROOT = Path(__file__).resolve().parents[1]
#: The venv's scripts: `kiln`, `dvc`, `gto`, `lint-imports`, next to this interpreter.
BIN = Path(sys.executable).parent
KILN = BIN / "kiln"

#: Generous: the machine may be shared, and every `kiln run` pays for `import torch`.
TIMEOUT = 300


def environment() -> dict[str, str]:
    """The environment of every subprocess a test starts."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env.update(
        PYTHONDONTWRITEBYTECODE="1",
        NO_COLOR="1",
        KILN_PROGRESS="lines",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        DVC_NO_ANALYTICS="1",
    )
    for key, value in (
        ("GIT_AUTHOR_NAME", "test"),
        ("GIT_AUTHOR_EMAIL", "test@example.com"),
        ("GIT_COMMITTER_NAME", "test"),
        ("GIT_COMMITTER_EMAIL", "test@example.com"),
    ):
        env.setdefault(key, value)
    return env


def run(
    *args: str | Path, cwd: Path, check: bool = True, timeout: float = TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Any command (`git`, `dvc`, `gto`, `kiln`...) with the venv's tools first on PATH,
    capturing text output; with `check`, a non-zero exit fails the test with the output."""
    argv = [str(a) for a in args]
    result = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, env=environment(),
        timeout=timeout, check=False,
    )  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {result.returncode}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
    return result


def kiln(
    *args: str | Path, cwd: Path, timeout: float = TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """`kiln ARGS...` (the venv's console script) in `cwd`; never raises on a non-zero exit."""
    assert KILN.exists(), f"{KILN} missing: install the project (make test does)"
    return run(KILN, *args, cwd=cwd, check=False, timeout=timeout)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """Assert a command succeeded, showing its output when it did not."""
    assert result.returncode == 0, (
        f"exited {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )
    return result


def failed(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """Assert a `kiln` run failed with `code` and a message, not a traceback; returns stderr."""
    output = result.stdout + result.stderr
    assert result.returncode == code, f"expected exit {code}, got {result.returncode}\n{output}"
    assert "Traceback" not in output, output
    assert "error:" in result.stderr, output
    return result.stderr


# -- folders the commands run in -----------------------------------------------------------


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


# -- git + DVC repositories (tests/e2e) ----------------------------------------------------

#: A small classification pipeline: synthetic 8x8 images, an MLP, a couple of epochs.
TINY_SPEC = """\
name: tiny
task: classification
seed: 0
stages:
  load_data:
    dataset: {name: synthetic, num_classes: 3, per_class: 20, image_size: 8}
    split: {val: 0.2, test: 0.2}
  augment:
    train: [{name: RandomHorizontalFlip, p: 0.5}]
  build_model:
    model: {name: mlp, hidden: [16]}
  train:
    epochs: 2
    batch_size: 16
    optimizer: {name: Adam, lr: 0.01}
  evaluate:
    metrics: [accuracy, f1_macro, confusion_matrix]
    misclassified: 4
"""

EXPORT_BLOCK = """\
  export:
    formats: [onnx, safetensors]
"""


def stages_run(result: subprocess.CompletedProcess[str]) -> set[str]:
    """DVC stage names that `dvc repro` ran (not skipped)."""
    return set(re.findall(r"Running stage '([^']+)'", result.stdout + result.stderr))


def make_repo(root: Path, specs: dict[str, str], remote: Path | None = None) -> Path:
    """A git repo with DVC initialised, the given specs under pipelines/, dvc.yaml, one commit."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pipelines").mkdir()
    for name, text in specs.items():  # a name may hold a folder: base/common.yaml
        (root / "pipelines" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "pipelines" / name).write_text(textwrap.dedent(text))
    run("git", "init", "-q", cwd=root)
    run("dvc", "init", "-q", cwd=root)
    run("dvc", "config", "core.analytics", "false", cwd=root)
    if remote is not None:
        remote.mkdir(parents=True, exist_ok=True)
        run("dvc", "remote", "add", "-d", "local", str(remote), cwd=root)
    (root / ".gitignore").write_text("/.kiln/\n/dvc_plots/\n")
    run("kiln", "dvc", cwd=root)
    run("git", "add", "-A", cwd=root)
    run("git", "commit", "-qm", "start", cwd=root)
    return root


# -- warm workers (torchkiln.warm) the tests' `dvc repro` runs start --------------------------

#: where a repository's warm workers keep their sockets and logs
WARM_DIR = Path(".kiln/warm")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def workers(repo: Path) -> list[int]:
    """Pids of the warm workers serving `repo` (found by their command line, which their
    children share until they end)."""
    found, children = [], set(served(repo))
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ours = b"torchkiln.warm.server" in argv and any(str(repo).encode() in a for a in argv)
        if ours and alive(int(entry.name)) and int(entry.name) not in children:
            found.append(int(entry.name))
    return found


def served(repo: Path) -> list[int]:
    """Pids of the children the workers of `repo` forked, from their logs."""
    if not (repo / WARM_DIR).exists():
        return []
    return [
        int(line.split()[1].rstrip(":"))
        for log in sorted((repo / WARM_DIR).glob("*.log"))
        for line in log.read_text().splitlines()
        if line.startswith("child ")
    ]


def stop_warm_workers(root: Path) -> None:
    """Stop the warm workers serving `root` and the children they forked (SIGTERM, then
    SIGKILL after 10 s), so no test leaves a process behind."""
    if not root.exists():
        return
    pids = workers(root) + [p for p in served(root) if alive(p)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < end:
        time.sleep(0.1)
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
