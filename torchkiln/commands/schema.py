"""`kiln schema [-o FILE]`: the JSON Schema of the spec language, for editor completion."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from torchkiln.commands import AddCommand


def register(add: AddCommand) -> None:
    p = add("schema", run, "Print the JSON Schema of the spec language (for editors).")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")


def schema_text() -> str:
    import json

    from torchkiln.schemas.json_schema import spec_json_schema

    return json.dumps(spec_json_schema(), indent=2, sort_keys=True) + "\n"


def run(args: argparse.Namespace) -> int:
    from torchkiln.commands.common import default_specs
    from torchkiln.io import atomic_write_text
    from torchkiln.project import load_plugins_of

    load_plugins_of(default_specs())
    text = schema_text()
    if args.output:
        atomic_write_text(Path(args.output), text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
