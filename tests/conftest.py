"""Fixtures shared by every test. Plain helpers live in cli_tools.py (running `kiln`, `dvc`,
`git`) and registry_state.py: import them from there, never from `conftest`, which is
ambiguous with tests/e2e/conftest.py."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from registry_state import restored_registries

# No warm worker (torchkiln.warm) in the many short-lived repositories the tests make: each
# would preload torch beside the tests and outlive them. tests/test_warm.py turns it on.
os.environ.setdefault("KILN_WARM", "0")


@pytest.fixture(autouse=True)
def _registries_restored() -> Iterator[None]:
    """No registration leaks from one test into another: whatever a test registers (a
    component, a registry kind, a loaded plugin) is gone when it ends."""
    with restored_registries():
        yield
