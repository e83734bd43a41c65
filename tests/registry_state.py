"""Snapshot and restore of torchkiln's process-wide registration state, so a test that
registers a component, creates a registry or loads a plugin leaves nothing behind.

Used by the autouse fixture in tests/conftest.py (every test runs inside
`restored_registries()`); import it from here, not from a conftest.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def restored_registries() -> Iterator[None]:
    """Run the body, then put back every registry in `ALL_REGISTRIES` (its entries and its
    generic adapter), the set of registries itself, and the plugin cache; modules of the
    plugins loaded meanwhile are dropped from `sys.modules`, so loading one again
    registers its components again.

    The built-in packs are loaded first: they register on first import only, so a snapshot
    taken before that import would drop them for good."""
    from torchkiln.packs import load_builtins
    from torchkiln.registry import plugins
    from torchkiln.registry.registry import ALL_REGISTRIES

    load_builtins()
    registries = dict(ALL_REGISTRIES)
    saved: dict[str, tuple[dict[str, Any], Any, Any]] = {
        kind: (dict(reg._entries), reg._generic, reg._generic_names)
        for kind, reg in registries.items()
    }
    cached = dict(plugins._by_key)
    try:
        yield
    finally:
        for key, plugin in list(plugins._by_key.items()):
            if key not in cached:
                sys.modules.pop(plugin.module.__name__, None)
        plugins._by_key.clear()
        plugins._by_key.update(cached)
        ALL_REGISTRIES.clear()
        ALL_REGISTRIES.update(registries)
        for kind, (entries, generic, generic_names) in saved.items():
            registry = registries[kind]
            registry._entries.clear()
            registry._entries.update(entries)
            registry._generic, registry._generic_names = generic, generic_names
