"""The `kiln` command line. Each command imports what it needs when it runs, so
`kiln validate` and `kiln --help` never import torch."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from torchkiln import __version__
from torchkiln.errors import KilnError, SpecError, UsageError

DESCRIPTION = """\
torchkiln: PyTorch pipelines as YAML, compiled into DVC stages.

A spec in pipelines/<name>.yaml names stages (load_data, augment, build_model,
train, evaluate, export) and the components they use. The day-to-day loop:

  kiln validate                 check every spec (all errors at once, file:line:col)
  kiln dvc                      write dvc.yaml from the specs
  dvc repro                     run what changed (or: kiln repro)
  dvc exp run -S 'pipelines/x.yaml:stages.train.optimizer.lr=0.01'
  dvc metrics show / dvc plots show / dvc exp show

  kiln run pipelines/x.yaml     run a pipeline without DVC (same outputs, same paths)
  kiln list [KIND]              what you can name in a spec, with parameters
  kiln schema -o kiln.schema.json   JSON Schema for editor completion

Exit codes: 0 ok, 2 invalid spec or usage, 1 a run failed.
"""

SPEC_GLOBS = ("*.yaml", "*.yml")


def default_specs(folder: Path = Path("pipelines")) -> list[Path]:
    """Every spec under `pipelines/`, sorted."""
    return sorted(p for pattern in SPEC_GLOBS for p in folder.glob(pattern))


def _specs_or_default(given: Sequence[str]) -> list[Path]:
    if given:
        return [Path(s) for s in given]
    specs = default_specs()
    if not specs:
        raise UsageError("no specs given and none found in pipelines/*.yaml")
    return specs


def cmd_validate(args: argparse.Namespace) -> int:
    from torchkiln.project import load_project

    specs = _specs_or_default(args.specs)
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


def cmd_list(args: argparse.Namespace) -> int:
    from torchkiln.describe import registry_text
    from torchkiln.project import load_plugins_of
    from torchkiln.registry import ALL_REGISTRIES
    from torchkiln.registry.registry import did_you_mean

    load_plugins_of(default_specs())
    if args.kind is None:
        kinds = sorted(ALL_REGISTRIES)
    elif args.kind.rstrip("s") in ALL_REGISTRIES or args.kind in ALL_REGISTRIES:
        kinds = [args.kind if args.kind in ALL_REGISTRIES else args.kind.rstrip("s")]
    else:
        known = sorted(ALL_REGISTRIES)
        raise UsageError(
            f"no kind {args.kind!r}; {did_you_mean(args.kind, known)}kinds: {', '.join(known)}"
        )
    print("\n\n".join(registry_text(ALL_REGISTRIES[k], verbose=not args.brief) for k in kinds))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    import json

    from torchkiln.io import atomic_write_text
    from torchkiln.project import load_plugins_of
    from torchkiln.schemas.json_schema import spec_json_schema

    load_plugins_of(default_specs())
    text = json.dumps(spec_json_schema(), indent=2, sort_keys=True) + "\n"
    if args.output:
        atomic_write_text(Path(args.output), text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from torchkiln.runner import run_pipeline
    from torchkiln.schemas.spec import load_pipeline

    pipeline = load_pipeline(Path(args.spec))
    run_pipeline(pipeline, args.stage)
    return 0


def _compile_dvc(specs: list[Path]) -> tuple[str, str, int]:
    from torchkiln.dvc import dvc_yaml_text
    from torchkiln.project import load_project

    pipelines, _ = load_project(specs)
    current, new = dvc_yaml_text(pipelines)
    return current, new, sum(len(p.stages) for p in pipelines.values())


def cmd_dvc(args: argparse.Namespace) -> int:
    from torchkiln.dvc import DVC_FILE, unified_diff
    from torchkiln.io import atomic_write_text

    specs = _specs_or_default(args.specs)
    current, new, count = _compile_dvc(specs)
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


def tool_path(name: str) -> str:
    """A console script installed beside this Python (the venv's dvc), else from PATH."""
    import shutil

    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise UsageError(f"`{name}` is not installed (pip install {name})")
    return found


def env_with_own_bin() -> dict[str, str]:
    """The environment with this Python's bin folder first on PATH, so DVC finds `kiln`."""
    import os

    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def cmd_repro(args: argparse.Namespace) -> int:
    import subprocess

    from torchkiln.dvc import DVC_FILE
    from torchkiln.io import atomic_write_text

    current, new, count = _compile_dvc(default_specs() or _specs_or_default([]))
    if current != new:
        atomic_write_text(DVC_FILE, new)
        print(f"wrote {DVC_FILE}: {count} kiln stages", file=sys.stderr)
    return subprocess.call([tool_path("dvc"), "repro", *args.dvc_args], env=env_with_own_bin())


def cmd_init(args: argparse.Namespace) -> int:
    import json
    import os

    from torchkiln.dvc import DVC_FILE, dvc_yaml_text
    from torchkiln.io import atomic_write_text
    from torchkiln.project import load_project
    from torchkiln.scaffold import finish_workspace, init_workspace
    from torchkiln.schemas.json_schema import spec_json_schema

    target = Path(args.dir)
    storage = init_workspace(target, tool_path("dvc"), Path(args.remote) if args.remote else None)
    here = Path.cwd()
    os.chdir(target)
    try:
        pipelines, _ = load_project(default_specs())
        atomic_write_text(DVC_FILE, dvc_yaml_text(pipelines)[1])
        schema = json.dumps(spec_json_schema(), indent=2, sort_keys=True) + "\n"
        atomic_write_text(Path("kiln.schema.json"), schema)
    finally:
        os.chdir(here)
    finish_workspace(target)
    print(f"created {target} (DVC remote: {storage})\nnext: cd {target} && dvc repro")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kiln", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"torchkiln {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(
        name: str, func: Callable[[argparse.Namespace], int], help: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    p = add("validate", cmd_validate, "Check specs without running anything (never imports torch).")
    p.add_argument(
        "specs", nargs="*", metavar="SPEC", help="spec files (default: pipelines/*.yaml)"
    )

    p = add("list", cmd_list, "List registered stage kinds and components with their parameters.")
    p.add_argument("kind", nargs="?", help="one kind: stage, dataset, model, optimizer, ...")
    p.add_argument("--brief", action="store_true", help="names and summaries only")

    p = add(
        "run",
        cmd_run,
        "Run a pipeline (or some stages) without DVC: same outputs, same paths as dvc repro.",
    )
    p.add_argument("spec", metavar="SPEC", help="the pipeline spec, e.g. pipelines/mnist_cnn.yaml")
    p.add_argument(
        "--stage",
        action="append",
        metavar="STAGE",
        help="run only this stage (repeatable); its inputs must exist already",
    )

    p = add("dvc", cmd_dvc, "Write dvc.yaml from the specs (one DVC stage per pipeline stage).")
    p.add_argument(
        "specs", nargs="*", metavar="SPEC", help="spec files (default: pipelines/*.yaml)"
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="change nothing; exit 1 with a diff when dvc.yaml is stale",
    )

    p = add("repro", cmd_repro, "Run `kiln dvc`, then `dvc repro` with the arguments given.")
    p.add_argument(
        "dvc_args",
        nargs=argparse.REMAINDER,
        metavar="DVC_ARGS",
        help="passed to dvc repro (e.g. -f, a stage name)",
    )

    p = add("init", cmd_init, "Create a workspace: git + DVC, an example spec and plugin.")
    p.add_argument("dir", metavar="DIR", help="folder to create (must be new or empty)")
    p.add_argument(
        "--remote",
        metavar="PATH",
        help="local DVC remote folder (default: DIR.dvc-storage beside DIR)",
    )

    p = add("schema", cmd_schema, "Print the JSON Schema of the spec language (for editors).")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")

    import importlib

    from torchkiln.commands import MODULES

    for module in MODULES:
        importlib.import_module(module).register(add)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except SpecError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return exc.exit_code
    except KilnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
