"""The repository itself: a DVC project whose committed dvc.yaml matches its specs, whose
README's first commands exist, and whose CI runs `make test`."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from cli_tools import ROOT, kiln, ok, run


def test_dvc_yaml_is_in_sync_with_the_specs() -> None:
    result = kiln("dvc", "--check", cwd=ROOT)
    assert result.returncode == 0, f"run `kiln dvc` and commit dvc.yaml:\n{result.stdout}"
    assert "is up to date" in result.stdout


def test_this_repository_is_a_dvc_project() -> None:
    assert (ROOT / ".dvc" / "config").is_file()
    ignored = (ROOT / ".dvcignore").read_text().splitlines()
    assert "__pycache__/" in ignored and "*.pyc" in ignored


def test_the_readme_opens_with_two_make_targets_that_do_what_it_says() -> None:
    """`make demo` and `make test` head the README; a dry run (`make -n`) shows that demo
    runs the example through DVC and shows its metrics, and that test lints and runs pytest."""
    opening = "\n".join((ROOT / "README.md").read_text().splitlines()[:10])
    assert re.findall(r"^make (\w+)", opening, flags=re.MULTILINE) == ["demo", "test"]
    demo = ok(run("make", "-n", "demo", cwd=ROOT)).stdout
    assert re.search(r"kiln repro \S+", demo) and "dvc metrics show" in demo
    test = ok(run("make", "-n", "test", cwd=ROOT)).stdout
    for step in ("ruff check", "ruff format --check", "lint-imports", "pytest"):
        assert step in test, f"`make test` does not run {step}:\n{test}"


def test_ci_runs_make_test_from_the_repository_root(tmp_path: Path) -> None:
    """.ci/run started from elsewhere: a `make` first on PATH records how it was called."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "make").write_text('#!/bin/sh\necho "$PWD" "$@" > "$CALLS"\n')
    (bin_dir / "make").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env["CALLS"] = str(tmp_path / "calls")
    subprocess.run(
        ["bash", str(ROOT / ".ci" / "run")], cwd=tmp_path, env=env, check=True, timeout=60
    )
    assert (tmp_path / "calls").read_text().split() == [str(ROOT), "test"]
