"""`kiln validate [SPEC...]`: every error of every spec at once; never imports torch."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from torchkiln.commands import AddCommand
from torchkiln.commands.common import specs_or_default
from torchkiln.errors import Issue


def register(add: AddCommand) -> None:
    p = add("validate", run, "Check specs without running anything (never imports torch).")
    p.add_argument(
        "specs", nargs="*", metavar="SPEC", help="spec files (default: pipelines/*.yaml)"
    )


def run(args: argparse.Namespace) -> int:
    from torchkiln.project import load_project

    specs = specs_or_default(args.specs)
    abstract: list[Path] = []
    _, errors = load_project(specs, collect=True, abstract=abstract)
    failed = [spec for spec in specs if any(_concerns(issue, spec) for issue in errors)]
    for spec in specs:
        if spec in abstract:
            print(f"skip {spec.as_posix()} (abstract base: checked through the specs extending it)")
        elif spec not in failed:
            print(f"ok {spec.as_posix()}")
    if errors:
        for issue in errors:
            print(issue, file=sys.stderr)
        print(f"{len(failed) or 1} of {len(specs)} spec(s) invalid", file=sys.stderr)
        return 2
    return 0


def _concerns(issue: Issue, spec: Path) -> bool:
    """Whether an issue is the spec's own, or in a base the spec extends."""
    name = spec.as_posix()
    return issue.file == name or any(via.startswith(f"{name}:") for via in issue.via)
