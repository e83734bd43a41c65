"""`kiln validate [SPEC...]`: every error of every spec at once; never imports torch."""

from __future__ import annotations

import argparse
import sys

from torchkiln.commands import AddCommand
from torchkiln.commands.common import specs_or_default


def register(add: AddCommand) -> None:
    p = add("validate", run, "Check specs without running anything (never imports torch).")
    p.add_argument(
        "specs", nargs="*", metavar="SPEC", help="spec files (default: pipelines/*.yaml)"
    )


def run(args: argparse.Namespace) -> int:
    from torchkiln.project import load_project

    specs = specs_or_default(args.specs)
    _, errors = load_project(specs, collect=True)
    failed = {i.file for i in errors}
    for spec in specs:
        if spec.as_posix() not in failed:
            print(f"ok {spec.as_posix()}")
    if errors:
        for issue in errors:
            print(issue, file=sys.stderr)
        print(f"{len(failed)} of {len(specs)} spec(s) invalid", file=sys.stderr)
        return 2
    return 0
