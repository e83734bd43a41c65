"""`kiln init DIR`: a new workspace with git, DVC, an example spec and plugin, ready to run."""

from __future__ import annotations

import argparse
from pathlib import Path

from torchkiln.commands import AddCommand


def register(add: AddCommand) -> None:
    p = add("init", run, "Create a workspace: git + DVC, an example spec and plugin.")
    p.add_argument("dir", metavar="DIR", help="folder to create (must be new or empty)")
    p.add_argument(
        "--remote",
        metavar="PATH",
        help="local DVC remote folder (default: DIR.dvc-storage beside DIR)",
    )


def run(args: argparse.Namespace) -> int:
    import os

    from torchkiln.commands.common import default_specs, tool_path
    from torchkiln.commands.schema import schema_text
    from torchkiln.dvc import DVC_FILE, dvc_yaml_text
    from torchkiln.io import atomic_write_text
    from torchkiln.project import load_project
    from torchkiln.scaffold import finish_workspace, init_workspace

    target = Path(args.dir)
    storage = init_workspace(target, tool_path("dvc"), Path(args.remote) if args.remote else None)
    here = Path.cwd()
    os.chdir(target)
    try:
        pipelines, _ = load_project(default_specs())
        atomic_write_text(DVC_FILE, dvc_yaml_text(pipelines)[1])
        atomic_write_text(Path("kiln.schema.json"), schema_text())
    finally:
        os.chdir(here)
    finish_workspace(target)
    print(f"created {target} (DVC remote: {storage})\nnext: cd {target} && dvc repro")
    return 0
