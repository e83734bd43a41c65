"""Fixtures for the end-to-end tests (helpers live in tests/cli_tools.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_tools import TINY_SPEC, make_repo, stop_warm_workers


@pytest.fixture(autouse=True)
def _warm_as_users_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """`dvc repro` here runs as a user's does, with the warm worker (tests/conftest.py turns
    it off for the rest of the suite): its first stage starts one, and the later stages of
    the test's repros skip `import torch`. Workers end soon when idle, and each test stops
    its own."""
    monkeypatch.delenv("KILN_WARM", raising=False)
    monkeypatch.setenv("KILN_WARM_IDLE", "20")
    try:
        yield
    finally:
        for root in [tmp_path, *tmp_path.rglob(".kiln")]:
            stop_warm_workers(root.parent if root.name == ".kiln" else root)


@pytest.fixture
def tiny_repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", {"tiny.yaml": TINY_SPEC})
