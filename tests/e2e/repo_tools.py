"""Temporary git + DVC repositories driven through the real `kiln`, `dvc` and `gto` CLIs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

BIN = Path(sys.executable).parent

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


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env["KILN_PROGRESS"] = "lines"
    env.setdefault("GIT_AUTHOR_NAME", "test")
    env.setdefault("GIT_AUTHOR_EMAIL", "test@example.com")
    env.setdefault("GIT_COMMITTER_NAME", "test")
    env.setdefault("GIT_COMMITTER_EMAIL", "test@example.com")
    env["DVC_NO_ANALYTICS"] = "1"
    return env


Run = Callable[..., subprocess.CompletedProcess[str]]


def run(
    *args: str, cwd: Path, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run a command with the venv's tools first on PATH; fail loudly with its output."""
    result = subprocess.run(
        list(args), cwd=cwd, capture_output=True, text=True, env=environment(),
        timeout=timeout, check=False,
    )  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {result.returncode}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
    return result


def stages_run(result: subprocess.CompletedProcess[str]) -> set[str]:
    """DVC stage names that `dvc repro` ran (not skipped)."""
    return set(re.findall(r"Running stage '([^']+)'", result.stdout + result.stderr))


def make_repo(root: Path, specs: dict[str, str], remote: Path | None = None) -> Path:
    """A git repo with DVC initialised, the given specs under pipelines/, dvc.yaml, one commit."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pipelines").mkdir()
    for name, text in specs.items():
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
