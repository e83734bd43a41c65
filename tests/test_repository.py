"""The repository itself: a DVC project whose committed dvc.yaml matches its specs."""

from __future__ import annotations

from pathlib import Path

from cli_tools import ROOT, run_kiln


def test_dvc_yaml_is_in_sync_with_the_specs() -> None:
    result = run_kiln("dvc", "--check", cwd=ROOT)
    assert result.returncode == 0, f"run `kiln dvc` and commit dvc.yaml:\n{result.stdout}"
    assert "is up to date" in result.stdout


def test_this_repository_is_a_dvc_project() -> None:
    assert (ROOT / ".dvc" / "config").is_file()
    ignored = (ROOT / ".dvcignore").read_text().splitlines()
    assert "__pycache__/" in ignored and "*.pyc" in ignored


def test_readme_opens_with_the_two_commands() -> None:
    opening = "\n".join((ROOT / "README.md").read_text().splitlines()[:10])
    assert "make demo" in opening and "make test" in opening


def test_ci_runs_make_test() -> None:
    script = Path(ROOT / ".ci" / "run").read_text()
    assert "make test" in script
