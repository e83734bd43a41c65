"""Fixtures for the end-to-end tests (helpers live in repo_tools.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from repo_tools import TINY_SPEC, make_repo


@pytest.fixture
def tiny_repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", {"tiny.yaml": TINY_SPEC})
