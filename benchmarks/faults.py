"""The whole fault matrix (tests/test_faults.py runs a CI-sized sample of it).

For every stage kind of every family (image, text, GAN, forecasting), in a workspace
where the tiny pipelines of tests/faultinject/matrix.py ran once (their outputs are the
references):

- kill -9 at each aimed moment (old outputs being discarded, the first staged write and
  flush, between the renames into place of plots/, metrics.json and out/, right after
  out/) and at `--random` random moments: no output looks complete while it is not, and
  the rerun is byte-identical to the uninterrupted run;
- ENOSPC, EIO, EROFS and EACCES (a read-only runs/, as root cannot chmod one) on each of
  the stage's writes: one error line naming the path, exit 1, nothing partial, then a
  rerun byte-identical;
- damaged upstream files (truncated safetensors, edited or broken meta.json, a missing
  vocabulary, garbage weights, a missing model.json) and a damaged checkpoint: the error
  names the file and the stage to rerun;
- Ctrl-C and SIGTERM in every train (with two DataLoader workers, and in a 2-process
  distributed train), a second `kiln run` of a running stage, and two `dvc exp run` queue
  workers on the same pipeline.

Prints one line per case and the counts of faults injected and survived by kind; exits
1 if any case failed.

    python benchmarks/faults.py [--random 2] [--seed 0] [--only img,txt] [--kinds kill,write]
                                [--stages train]
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the harness lives beside the tests that use it

from cli_tools import digests, make_repo, run  # noqa: E402
from faultinject import matrix  # noqa: E402

KINDS = ("kill", "random", "write", "corrupt", "signal", "lock", "queue")


def build(root: Path, families: list[str]) -> dict[tuple[str, str], float]:
    """The reference workspace, stage by stage; returns each stage's wall time."""
    matrix.write_workspace(root, export_formats=matrix.FULL_EXPORT)
    seconds: dict[tuple[str, str], float] = {}
    order = (["cls"] if "gan" in families else []) + families + ["imgdir"]
    for pipeline in order:
        stages = matrix.FAMILIES.get(pipeline) or ["load_data", "build_model", "train"]
        if pipeline == "cls":
            stages = ["load_data", "build_model", "train"]
        if pipeline == "imgdir":
            stages = ["load_data", "build_model"]
        for stage in stages:
            start = time.perf_counter()
            result = matrix.kiln(root, f"{pipeline}.yaml", "--stage", stage)
            if result.returncode != 0:
                sys.exit(f"building the workspace: {pipeline}/{stage} failed:\n{result.stderr}")
            seconds[pipeline, stage] = time.perf_counter() - start
    return seconds


@dataclass
class Planned:
    """A case to run: `round` orders them so every kind comes early (a run stopped
    halfway has still tried each kind of fault on each family)."""

    round: int
    kind: str
    pipeline: str
    stage: str
    detail: str
    check: Callable[[Path, dict[str, str]], list[str]]


class Matrix:
    """Plans cases, then runs each in a fresh copy of the reference workspace."""

    def __init__(self, reference: Path, scratch: Path) -> None:
        self.reference, self.scratch = reference, scratch
        self.planned: list[Planned] = []
        self.cases: list[matrix.Case] = []

    def case(
        self,
        kind: str,
        pipeline: str,
        stage: str,
        detail: str,
        check: Callable[[Path, dict[str, str]], list[str]],
        round: int = 0,
    ) -> None:
        self.planned.append(Planned(round, kind, pipeline, stage, detail, check))

    def run(self, deadline: float) -> None:
        """Every planned case in round order, until `deadline` (time.monotonic())."""
        for number, planned in enumerate(sorted(self.planned, key=lambda c: c.round)):
            if time.monotonic() > deadline:
                print(f"time is up: {len(self.planned) - number} case(s) not run", flush=True)
                return
            self._run(number, planned)

    def _run(self, number: int, planned: Planned) -> None:
        ws = matrix.copy_workspace(self.reference, self.scratch / f"case-{number}")
        ref = digests(matrix.stage_dir(ws, planned.pipeline, planned.stage))
        start = time.perf_counter()
        try:
            problems = planned.check(ws, ref)
        except Exception as exc:  # a harness failure is a failed case, not the end of it all
            problems = [f"{type(exc).__name__}: {exc}"]
        case = matrix.Case(planned.kind, planned.pipeline, planned.stage, planned.detail, problems)
        if problems == ["finished before the kill"]:
            case.kind, case.problems = "random (finished first)", []
        self.cases.append(case)
        print(f"{case} ({time.perf_counter() - start:.1f}s)", flush=True)
        shutil.rmtree(ws, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--random", type=int, default=2, help="random kill moments per stage")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default=",".join(matrix.FAMILIES), help="families")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"of {', '.join(KINDS)}")
    parser.add_argument("--stages", default="", help="only these stages (default: all)")
    parser.add_argument("--minutes", type=float, default=0, help="stop after (0: never)")
    parser.add_argument(
        "--reference", type=Path, help="a workspace an earlier run built (kept with --keep)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the workspace it builds")
    args = parser.parse_args()
    families = args.only.split(",")
    kinds = set(args.kinds.split(","))
    rng = random.Random(args.seed)
    began = time.perf_counter()
    deadline = time.monotonic() + (args.minutes * 60 or float("inf"))
    root = Path(tempfile.mkdtemp(prefix="kiln-faults-"))
    try:
        reference = args.reference or root / "reference"
        seconds = timings(reference) if args.reference else build(reference, families)
        built = "reused" if args.reference else f"built in {sum(seconds.values()):.0f}s"
        print(f"reference workspace {reference} ({built})", flush=True)
        m = Matrix(reference, root)
        for pipeline in families:
            for stage in matrix.FAMILIES[pipeline]:
                if args.stages and stage not in args.stages.split(","):
                    continue
                stage_matrix(
                    m,
                    pipeline,
                    stage,
                    kinds,
                    randoms=args.random,
                    rng=rng,
                    seconds=seconds.get((pipeline, stage), 5.0),
                )
        if "corrupt" in kinds:
            for i, damage in enumerate(d for d in matrix.damages() if d.pipeline in families):
                m.case(
                    "corrupt",
                    damage.pipeline,
                    damage.stage,
                    f"{damage.label} ({damage.path})",
                    lambda ws, ref, d=damage: matrix.corrupt_input(ws, d),
                    round=i // 4,
                )
            for pipeline in families:
                m.case(
                    "corrupt",
                    pipeline,
                    "train",
                    "damaged checkpoint",
                    lambda ws, ref, p=pipeline: matrix.corrupt_checkpoint(ws, p),
                    round=1,
                )
        signals(m, kinds)
        if "queue" in kinds:
            m.case(
                "queue",
                "img",
                "-",
                "dvc exp run --queue x2, dvc queue start -j 2",
                lambda ws, ref: queue_workers(root / "queue"),
                round=2,
            )
        print(f"{len(m.planned)} cases planned", flush=True)
        m.run(deadline)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return summary(m.cases, time.perf_counter() - began)


def timings(reference: Path) -> dict[tuple[str, str], float]:
    """Stage times of a reused workspace are not known: the random kills assume 10 s."""
    return {(p, s): 10.0 for p, stages in matrix.FAMILIES.items() for s in stages}


def stage_matrix(
    m: Matrix,
    pipeline: str,
    stage: str,
    kinds: set[str],
    *,
    randoms: int,
    rng: random.Random,
    seconds: float,
) -> None:
    """The aimed kills, random kills and write failures of one stage; the i-th of each in
    round i."""
    ref = digests(matrix.stage_dir(m.reference, pipeline, stage))
    if "kill" in kinds:
        # the moves into place first: the moments the issue names
        points = sorted(
            matrix.kill_points(pipeline, stage, ref).items(),
            key=lambda item: "moving" not in item[0] and "move" not in item[0],
        )
        for i, (point, fault) in enumerate(points):
            m.case(
                "kill",
                pipeline,
                stage,
                point,
                lambda ws, ref, f=fault: matrix.kill_at(ws, pipeline, stage, ref, f),
                i,
            )
    if "random" in kinds:
        for i in range(randoms):
            delay = rng.uniform(0.5, max(seconds, 1.0))
            m.case(
                "random",
                pipeline,
                stage,
                f"kill -9 after {delay:.2f}s of {seconds:.1f}s",
                lambda ws, ref, d=delay: matrix.kill_after(ws, pipeline, stage, ref, d),
                i,
            )
    if "write" in kinds:
        errnos = list(matrix.WRITE_ERRORS)
        for i, (point, fault) in enumerate(matrix.write_points(pipeline, stage).items()):
            errno = errnos[(i + len(m.planned)) % len(errnos)]
            m.case(
                "write",
                pipeline,
                stage,
                f"{errno} at {point}",
                lambda ws, ref, f={**fault, "action": errno}: matrix.write_fails(
                    ws, pipeline, stage, ref, f
                ),
                i,
            )


def signals(m: Matrix, kinds: set[str]) -> None:
    """Ctrl-C and SIGTERM in the long image-folder train (two DataLoader workers), in a
    2-process distributed train, and a second run refused while the first runs."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        if "signal" in kinds:
            m.case(
                "signal",
                "imgdir",
                "train",
                f"{sig.name}, 2 DataLoader workers",
                lambda ws, ref, s=sig: matrix.interrupt(ws, "imgdir", "train", s, workers=2),
            )
            m.case(
                "signal",
                "imgdir",
                "train",
                f"{sig.name}, distributed nproc 2",
                lambda ws, ref, s=sig: distributed(ws, s),
                round=1,
            )
    if "lock" in kinds:
        m.case(
            "lock",
            "imgdir",
            "train",
            "a second kiln run of a running stage",
            lambda ws, ref: matrix.interrupt(
                ws,
                "imgdir",
                "train",
                signal.SIGINT,
                during=matrix.second_run_refused(ws, "imgdir", "train"),
            ),
        )


def distributed(ws: Path, sig: signal.Signals) -> list[str]:
    """The same train on two distributed processes (kiln's launcher and its two workers):
    every one of them gone after the signal, one line said."""
    spec = ws / "imgdir.yaml"
    spec.write_text(spec.read_text().replace("num_workers: 2}", "distributed: {nproc: 2}}"))
    return matrix.interrupt(ws, "imgdir", "train", sig, workers=2)


QUEUE_SPEC = matrix.specs(matrix.CI_EXPORT)["img.yaml"].split("  evaluate:")[0]


def queue_workers(repo: Path) -> list[str]:
    """Two queued experiments of one pipeline run by two queue workers at once: both
    succeed, each with its own parameter and metrics."""
    make_repo(repo, {"img.yaml": QUEUE_SPEC})
    run("dvc", "repro", cwd=repo)
    run("git", "add", "-A", cwd=repo)
    run("git", "commit", "-qm", "baseline", cwd=repo)
    key = "pipelines/img.yaml:stages.train.optimizer.lr"
    for lr in ("0.002", "0.02"):
        run("dvc", "exp", "run", "--queue", "-S", f"{key}={lr}", cwd=repo)
    run("dvc", "queue", "start", "-j", "2", cwd=repo)
    deadline = time.time() + 600
    status = ""
    while time.time() < deadline:
        status = run("dvc", "queue", "status", cwd=repo).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(3)
    run("dvc", "queue", "stop", "--kill", cwd=repo, check=False)
    problems = []
    if status.count("Success") != 2:
        logs = run("dvc", "queue", "logs", "--all", cwd=repo, check=False)  # noqa: F841
        problems.append(f"expected two successful experiments:\n{status}")
    table = run("dvc", "exp", "show", "--csv", cwd=repo).stdout
    for lr in ("0.002", "0.02"):
        if lr not in table:
            problems.append(f"experiment with lr {lr} missing from dvc exp show")
    return problems


def summary(cases: list[matrix.Case], seconds: float) -> int:
    injected, survived = Counter(), Counter()
    for case in cases:
        injected[case.kind] += 1
        survived[case.kind] += not case.problems
    print(f"\n{'kind':<26} {'injected':>8} {'survived':>8}")
    for kind in sorted(injected):
        print(f"{kind:<26} {injected[kind]:>8} {survived[kind]:>8}")
    total, ok = sum(injected.values()), sum(survived.values())
    print(f"{'all':<26} {total:>8} {ok:>8}   ({seconds / 60:.1f} min)")
    failed = [c for c in cases if c.problems]
    for case in failed:
        print(f"FAILED {case}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
