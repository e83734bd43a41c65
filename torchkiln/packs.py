"""The component packs that ship inside torchkiln, and installed plugin packages.

Built-in packs register into the registries exactly as a user plugin does; the registry
package itself knows none of them. `load_builtins()` imports them (once), then every
installed package's `torchkiln.plugins` entry point.
"""

from __future__ import annotations

import importlib
import importlib.metadata

from torchkiln.errors import UsageError
from torchkiln.registry.plugins import describe_exception

#: Component packs that ship inside torchkiln; they register like any plugin.
BUILTIN_PACKS = (
    "torchkiln.common",
    "torchkiln.vision",
    "torchkiln.text",
    "torchkiln.gan",
    "torchkiln.forecast",
    "torchkiln.stages.builtin",
)
ENTRY_POINT_GROUP = "torchkiln.plugins"

_loaded = False


def load_builtins() -> None:
    """Import the built-in packs and any installed `torchkiln.plugins` entry points (once)."""
    global _loaded
    if _loaded:
        return
    for pack in BUILTIN_PACKS:
        importlib.import_module(pack)
    _loaded = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except (Exception, SystemExit) as exc:  # sys.exit() in a plugin must not end kiln
            raise UsageError(
                f"installed plugin {ep.name!r} ({ep.value}) failed on import: "
                f"{describe_exception(exc)}"
            ) from exc
