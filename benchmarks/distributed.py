"""Distributed training on the CPU: 2 processes x 1 thread against 1 process x 2 threads.

Both train the same spec (small_cnn on MNIST-5k, the global batch 64, AdamW) through the
real `kiln run SPEC --stage train`: once with `distributed: {nproc: 2}` (gloo, one thread
per worker, as kiln's launcher sets it on a 2-core machine) and once in one process with
two threads. The epochs' own timings come from the stage's log (one line per epoch), so
process start-up is left out of samples/s and reported apart.

The time spent in communication is measured directly, in one more 2-process run of this
script (`--worker`, under torch's elastic launcher): the same DDP train step on the same
batches, timed with gradient averaging (a normal step) and without it (DDP's `no_sync`);
the difference is what the all-reduce of the gradients costs.

    .venv/bin/python benchmarks/distributed.py [--epochs 3] [--rounds 2] [--quick]

Prints samples/s of both and the ratio, the communication share of a step, and a verdict:
on a 2-core CPU the aim is only that two processes are not much slower than two threads
(>= 0.7x; data parallelism pays on several GPUs or machines, not on two cores).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import load, machine

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EPOCH_LINE = re.compile(r"^epoch (\d+)/\d+ .*\((\d+\.\d+)s\)")

SPEC = """\
name: bench
seed: 0
device: cpu
stages:
  load_data:
    dataset: {{name: mnist_sample}}
    split: {{val: 0.1, test: 0.2}}
  build_model:
    model: {{name: small_cnn, channels: [32, 64], hidden: 128, dropout: 0.25}}
  train:
    epochs: {epochs}
    batch_size: 64
    optimizer: {{name: AdamW, lr: 3.0e-3}}
    resume: false
{distributed}"""


def environment(threads: int | None) -> dict[str, str]:
    env = {**os.environ, "KILN_PROGRESS": "lines", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("OMP_NUM_THREADS", None)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def kiln(folder: Path, *args: str, threads: int | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(
        [str(BIN / "kiln"), *args],
        cwd=folder,
        env=environment(threads),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        sys.exit(f"kiln {' '.join(args)} failed:\n{result.stderr}")
    return time.perf_counter() - start, result.stderr


def epoch_seconds(log: str) -> list[float]:
    return [float(m.group(2)) for line in log.splitlines() if (m := EPOCH_LINE.match(line))]


def communication(folder: Path, steps: int) -> tuple[float, float]:
    """(seconds per step with gradient averaging, without), from 2 workers of this script."""
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    os.environ["OMP_NUM_THREADS"] = "1"  # each worker one thread, as kiln's launcher does
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=2,
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        run_id=f"bench-{os.getpid()}",
        max_restarts=0,
    )
    out = folder / "communication.txt"
    elastic_launch(config, sys.executable)(
        str(Path(__file__).resolve()), "--worker", str(folder), "--steps", str(steps)
    )
    synced, alone = (float(v) for v in out.read_text().split())
    return synced, alone


def worker(folder: Path, steps: int) -> None:
    """One of two processes: time DDP steps on the real train split, with and without the
    gradient all-reduce."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    sys.path.insert(0, str(ROOT))
    from torchkiln.runtime.datasets import open_dataset
    from torchkiln.runtime.model_artifact import open_model

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    data = open_dataset(folder / "runs/bench/load_data/out").split("train")
    model = DistributedDataParallel(open_model(folder / "runs/bench/build_model/out").build())
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    batches = [b.tensor_split(2)[rank] for b in order.split(64)][:steps]

    def run(sync: bool) -> float:
        start = time.perf_counter()
        for index in batches:
            (x,), y = data.batch(index)
            x = x.float() / 255.0
            if sync:
                loss_fn(model(x), y).backward()
            else:
                with model.no_sync():
                    loss_fn(model(x), y).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        dist.barrier()
        return (time.perf_counter() - start) / len(batches)

    run(True)  # warm-up
    timings = {True: [], False: []}
    for sync in (True, False, True, False):
        timings[sync].append(run(sync))
    if rank == 0:
        (folder / "communication.txt").write_text(
            f"{statistics.median(timings[True])} {statistics.median(timings[False])}\n"
        )
    dist.destroy_process_group()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--min-ratio", type=float, default=0.7)
    parser.add_argument("--worker", metavar="FOLDER", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=20, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="--epochs 2 --rounds 1")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.rounds = 2, 1
    if args.worker:
        worker(Path(args.worker), args.steps)
        return 0
    print(f"CPU: {machine()}; {load()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        specs = {
            "1 process x 2 threads": ("one.yaml", "", 2),
            "2 processes x 1 thread": ("two.yaml", "    distributed: {nproc: 2}\n", None),
        }
        for file, block, _ in specs.values():
            (folder / file).write_text(SPEC.format(epochs=args.epochs, distributed=block))
        # both specs are pipeline "bench": they share load_data's and build_model's outputs
        kiln(folder, "run", "one.yaml", "--stage", "load_data")
        kiln(folder, "run", "one.yaml", "--stage", "build_model")
        train_size = 3500
        results: dict[str, list[float]] = {label: [] for label in specs}
        walls: dict[str, list[float]] = {label: [] for label in specs}
        for round_ in range(args.rounds):
            labels = list(specs) if round_ % 2 == 0 else list(reversed(specs))
            for label in labels:
                file, _, threads = specs[label]
                wall, log = kiln(folder, "run", file, "--stage", "train", threads=threads)
                seconds = epoch_seconds(log)[1:] or epoch_seconds(log)  # first is warm-up
                results[label] += [train_size / s for s in seconds]
                walls[label].append(wall - sum(epoch_seconds(log)))
        synced, alone = communication(folder, steps=20)
    for label in specs:
        rates = results[label]
        print(
            f"{label:<24} {statistics.median(rates):7.0f} samples/s "
            f"(min {min(rates):.0f}, max {max(rates):.0f}; {len(rates)} epochs), "
            f"start-up and writing {statistics.median(walls[label]):.1f} s per run"
        )
    ratio = statistics.median(results["2 processes x 1 thread"]) / statistics.median(
        results["1 process x 2 threads"]
    )
    share = (synced - alone) / synced
    print(
        f"communication: a DDP step takes {synced * 1000:.1f} ms with the gradient all-reduce, "
        f"{alone * 1000:.1f} ms without: {share:.0%} of the step"
    )
    verdict = "PASS" if ratio >= args.min_ratio else "FAIL"
    print(f"{verdict}: 2 processes run at {ratio:.2f}x the speed of 1 (target >= {args.min_ratio})")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
