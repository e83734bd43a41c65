"""Fixtures shared by the tests (plain helpers live in cli_tools.py: import them from there,
never from `conftest`, which is ambiguous with tests/e2e/conftest.py)."""

from __future__ import annotations

import pytest
from cli_tools import KILN, Kiln, run_kiln


@pytest.fixture
def kiln() -> Kiln:
    """`kiln("validate", "spec.yaml", cwd=tmp_path)` -> CompletedProcess."""
    assert KILN.exists(), f"{KILN} missing: install the project (make test does)"
    return run_kiln
