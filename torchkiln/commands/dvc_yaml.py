"""`kiln dvc [--check]` writes dvc.yaml from the specs; `kiln repro` does that, then
`dvc repro` with the arguments given."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from torchkiln.commands import AddCommand


def register(add: AddCommand) -> None:
    p = add("dvc", run_dvc, "Write dvc.yaml from the specs (one DVC stage per pipeline stage).")
    p.add_argument(
        "specs", nargs="*", metavar="SPEC", help="spec files (default: pipelines/*.yaml)"
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="change nothing; exit 1 with a diff when dvc.yaml is stale",
    )
    p = add("repro", run_repro, "Run `kiln dvc`, then `dvc repro` with the arguments given.")
    p.add_argument(
        "dvc_args",
        nargs=argparse.REMAINDER,
        metavar="DVC_ARGS",
        help="passed to dvc repro (e.g. -f, a stage name)",
    )


def compile_dvc(specs: list[Path]) -> tuple[str, str, int]:
    """(dvc.yaml on disk, dvc.yaml from the specs, number of kiln stages)."""
    from torchkiln.dvc import dvc_yaml_text
    from torchkiln.project import load_project

    pipelines, _ = load_project(specs)
    current, new = dvc_yaml_text(pipelines)
    return current, new, sum(len(p.stages) for p in pipelines.values())


def run_dvc(args: argparse.Namespace) -> int:
    from torchkiln.commands.common import specs_or_default
    from torchkiln.dvc import DVC_FILE, unified_diff
    from torchkiln.io import atomic_write_text

    specs = specs_or_default(args.specs)
    current, new, count = compile_dvc(specs)
    if current == new:
        print(f"{DVC_FILE} is up to date ({count} kiln stages)")
        return 0
    if args.check:
        sys.stdout.write(unified_diff(current, new))
        print(f"{DVC_FILE} is stale: run `kiln dvc` and commit it", file=sys.stderr)
        return 1
    atomic_write_text(DVC_FILE, new)
    print(f"wrote {DVC_FILE}: {count} kiln stages from {len(specs)} spec(s)")
    if not Path(".dvc").is_dir():
        print(
            "note: this is not a DVC project yet; run `dvc init` (or start with `kiln init`)",
            file=sys.stderr,
        )
    return 0


def run_repro(args: argparse.Namespace) -> int:
    import subprocess

    from torchkiln.commands.common import env_with_own_bin, specs_or_default, tool_path
    from torchkiln.dvc import DVC_FILE
    from torchkiln.io import atomic_write_text

    current, new, count = compile_dvc(specs_or_default([]))
    if current != new:
        atomic_write_text(DVC_FILE, new)
        print(f"wrote {DVC_FILE}: {count} kiln stages", file=sys.stderr)
    return subprocess.call([tool_path("dvc"), "repro", *args.dvc_args], env=env_with_own_bin())
