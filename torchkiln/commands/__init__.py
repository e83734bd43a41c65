"""The `kiln` subcommands, one module each.

Each module named in `MODULES` defines `register(add)`, where
`add(name, func, help) -> argparse.ArgumentParser` creates a subcommand; `func(args)`
returns the exit code. Modules stay light at import (no torch): `kiln --help` loads them
all, so each command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

#: `add(name, func, help)` -> the new subcommand's parser
AddCommand = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]

#: In the order `kiln --help` lists them.
MODULES: list[str] = [
    "torchkiln.commands.validate",
    "torchkiln.commands.listing",
    "torchkiln.commands.run",
    "torchkiln.commands.show",
    "torchkiln.commands.dvc_yaml",
    "torchkiln.commands.init",
    "torchkiln.commands.schema",
    "torchkiln.commands.predict",
    "torchkiln.commands.sample",
    "torchkiln.commands.report",
]
