"""`kiln dvc [--check]` writes dvc.yaml from the specs; `kiln repro` does that (unless
dvc_stamp says nothing it reads changed), then `dvc repro` with the arguments given."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from torchkiln.commands import AddCommand
from torchkiln.layout import DVC_FILE


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
    p = add(
        "repro",
        run_repro,
        "Run `kiln dvc` (skipped when no spec, base, package or dvc.yaml changed since the "
        "last), then `dvc repro` with the arguments given.",
    )
    p.add_argument(
        "dvc_args",
        nargs=argparse.REMAINDER,
        metavar="DVC_ARGS",
        help="passed to dvc repro (e.g. -f, a stage name)",
    )


@dataclass
class Compiled:
    current: str  # dvc.yaml on disk
    new: str  # dvc.yaml from the specs
    count: int  # kiln stages
    files: list[str]  # the spec files and the files they extend
    plugins: bool  # whether a spec loads plugins


def compile_dvc(specs: list[Path]) -> Compiled:
    from torchkiln.dvc import dvc_yaml_text
    from torchkiln.project import load_project

    pipelines, _ = load_project(specs)
    current, new = dvc_yaml_text(pipelines)
    return Compiled(
        current,
        new,
        sum(len(p.stages) for p in pipelines.values()),
        [source.file for p in pipelines.values() for source in p.sources()],
        any(p.plugins for p in pipelines.values()),
    )


def run_dvc(args: argparse.Namespace) -> int:
    from torchkiln import dvc_stamp
    from torchkiln.commands.common import specs_or_default
    from torchkiln.dvc import unified_diff
    from torchkiln.io import atomic_write_text

    specs = specs_or_default(args.specs)
    began = time.time()
    compiled = compile_dvc(specs)
    if compiled.current == compiled.new:
        if not args.check:  # --check changes nothing, not even kiln's own cache
            dvc_stamp.record(specs, compiled.files, plugins=compiled.plugins, began=began)
        print(f"{DVC_FILE} is up to date ({compiled.count} kiln stages)")
        return 0
    if args.check:
        sys.stdout.write(unified_diff(compiled.current, compiled.new))
        print(f"{DVC_FILE} is stale: run `kiln dvc` and commit it", file=sys.stderr)
        return 1
    atomic_write_text(DVC_FILE, compiled.new)
    dvc_stamp.record(specs, compiled.files, plugins=compiled.plugins, began=began)
    print(f"wrote {DVC_FILE}: {compiled.count} kiln stages from {len(specs)} spec(s)")
    if not Path(".dvc").is_dir():
        print(
            "note: this is not a DVC project yet; run `dvc init` (or start with `kiln init`)",
            file=sys.stderr,
        )
    return 0


def run_repro(args: argparse.Namespace) -> int:
    import subprocess

    from torchkiln import dvc_stamp
    from torchkiln.commands.common import env_with_own_bin, specs_or_default, tool_path
    from torchkiln.io import atomic_write_text

    specs = specs_or_default([])
    if not dvc_stamp.fresh(specs):  # else nothing the compile reads changed since the last
        began = time.time()
        compiled = compile_dvc(specs)
        if compiled.current != compiled.new:
            atomic_write_text(DVC_FILE, compiled.new)
            print(f"wrote {DVC_FILE}: {compiled.count} kiln stages", file=sys.stderr)
        dvc_stamp.record(specs, compiled.files, plugins=compiled.plugins, began=began)
    return subprocess.call([tool_path("dvc"), "repro", *args.dvc_args], env=env_with_own_bin())
