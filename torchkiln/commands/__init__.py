"""Extra `kiln` subcommands, one module each.

Each module named in `MODULES` defines `register(add)`, where
`add(name, func, help) -> argparse.ArgumentParser` creates the subcommand; `func(args)`
returns the exit code. Modules must stay light at import (no torch): `kiln --help` loads
them all.
"""

MODULES: list[str] = ["torchkiln.commands.predict", "torchkiln.commands.sample"]
