"""Fixtures for the end-to-end tests (helpers live in tests/cli_tools.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_tools import TINY_SPEC, make_repo


@pytest.fixture
def tiny_repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", {"tiny.yaml": TINY_SPEC})
