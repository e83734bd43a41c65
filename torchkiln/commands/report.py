"""`kiln report [PIPELINE...] [-o report.html] [--rev REV ...]`: one self-contained HTML
file to review pipelines: the spec, the data, learning curves, metrics (beside baselines
where a task has them), figures, export parity and digests, library versions, and the
DVC/git state; with `--rev`, the revisions' params, metrics and curves side by side.

Reads JSON and image files only (torchkiln/report/): no torch, no numpy, no network.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from torchkiln.commands import AddCommand


def register(add: AddCommand) -> None:
    p = add(
        "report",
        run_report,
        "Write one self-contained HTML report of pipelines (and compare git revisions).",
    )
    p.add_argument(
        "pipelines",
        nargs="*",
        metavar="PIPELINE",
        help="pipeline names or spec files (default: every spec in pipelines/)",
    )
    p.add_argument(
        "-o",
        "--output",
        default="report.html",
        metavar="FILE",
        help="the HTML file to write (default: report.html)",
    )
    p.add_argument(
        "--rev",
        action="append",
        default=[],
        metavar="REV",
        help="compare with a git revision, tag, branch or DVC experiment name (repeatable)",
    )


def run_report(args: argparse.Namespace) -> int:
    from torchkiln import __version__
    from torchkiln.commands.common import tool_path
    from torchkiln.errors import RunError, UsageError
    from torchkiln.io import atomic_write_text
    from torchkiln.report.collect import (
        collect_report,
        git_state,
        resolve_revisions,
        select_pipelines,
    )
    from torchkiln.report.html import render

    pipelines = select_pipelines(args.pipelines)
    state = git_state()
    revisions = resolve_revisions(args.rev, state)
    try:
        dvc: str | None = tool_path("dvc")
    except UsageError:
        dvc = None  # the report says DVC is not installed
    report = collect_report(pipelines, revisions, state, dvc)
    html = render(report, f"torchkiln {__version__}")
    out = Path(args.output)
    try:
        atomic_write_text(out, html)
    except OSError as exc:
        raise RunError(f"cannot write {out.as_posix()}: {exc.strerror or exc}") from exc
    kb = len(html.encode("utf-8")) / 1024
    names = ", ".join(p.name for p in pipelines)
    compared = f", compared with {', '.join(args.rev)}" if args.rev else ""
    print(f"wrote {out.as_posix()} ({kb:.0f} KB): {names}{compared}", file=sys.stdout)
    return 0
