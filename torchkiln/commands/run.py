"""`kiln run SPEC [--stage S]...`: run a pipeline (or some stages) without DVC.

It is also the command every DVC stage runs; under `dvc repro` it first refuses a stage
whose dvc.yaml entry no longer matches the spec (`kiln dvc` fixes that)."""

from __future__ import annotations

import argparse
import gc
from pathlib import Path

from torchkiln.commands import AddCommand


def register(add: AddCommand) -> None:
    p = add(
        "run",
        run,
        "Run a pipeline (or some stages) without DVC: same outputs, same paths as dvc repro.",
    )
    p.add_argument("spec", metavar="SPEC", help="the pipeline spec, e.g. pipelines/mnist_cnn.yaml")
    p.add_argument(
        "--stage",
        action="append",
        metavar="STAGE",
        help="run only this stage (repeatable); its inputs must exist already",
    )


def run(args: argparse.Namespace) -> int:
    from torchkiln.dvc import check_not_stale
    from torchkiln.runner import run_pipeline
    from torchkiln.schemas.spec import load_pipeline

    pipeline = load_pipeline(Path(args.spec))
    check_not_stale(pipeline, args.stage or [])
    run_pipeline(pipeline, args.stage)
    # The process exits next, with every output written and fsynced. What is alive now
    # (torch, its compiler stack that torch.optim imports, torchkiln: ~340k objects) would
    # be walked by the interpreter's shutdown collections and torn down one cycle at a
    # time, about 1 s of CPU for nothing; frozen, the collector leaves it to the exit.
    gc.freeze()
    return 0
