"""`kiln run SPEC --stage train` as a user waits for it, next to a hand-written script.

Both are whole processes, timed from start to exit (wall time), with the same thread
count (`OMP_NUM_THREADS`):

- torchkiln: `kiln run SPEC --stage train` on a spec of `small_cnn` (channels [32, 64],
  hidden 128, dropout 0.25) on `mnist_sample` (split val 0.1, test 0.2), 5 epochs, batch
  64, AdamW, CPU; load_data and build_model are run once beforehand (untimed).
- plain: `benchmarks/plain_train.py`, a careful hand-written PyTorch script doing the
  same work from the same artifacts: in-memory tensors normalised once, batch indexing,
  validation each epoch, the best state kept and saved (see its docstring).

The rounds alternate (the order flips every round) after a warm-up of the file cache
(`import torch` once). Both report their epochs on stderr; from them the script splits
each wall time into the epochs (training and validation) and the rest (interpreter
start, imports, spec, data and model loading, optimizer, writing, exit). The runs must
compute the same thing: the script checks that the plain script's history equals the
train stage's `plots/history.json`, number for number, and exits 1 if not.

    .venv/bin/python benchmarks/train_process.py [--rounds 3] [--threads 2] [--epochs 5]
        [--min-ratio 0.97] [--quick]

Prints each round, the medians with min and max, and the ratio plain / torchkiln (1.00:
as fast); exits 1 when torchkiln's median is slower than `--min-ratio` x the plain one.
"""

from __future__ import annotations

import argparse
import json
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

SPEC = """\
name: mnist5
task: classification
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
    optimizer: {{name: AdamW}}
"""
EPOCH_LINE = re.compile(r"^epoch \d+/\d+ .*\((\d+\.\d)s\)", re.MULTILINE)


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds of the whole process, and the seconds its epoch lines add up to."""
    started = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stderr}")
    return wall, sum(float(s) for s in EPOCH_LINE.findall(result.stderr))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--min-ratio", type=float, default=0.97, help="exit 1 below this")
    parser.add_argument("--quick", action="store_true", help="--rounds 1 --epochs 2")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.epochs = 1, 2

    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(args.threads),
        "KILN_PROGRESS": "lines",  # as under dvc repro
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    with tempfile.TemporaryDirectory(prefix="kiln-bench-") as tmp:
        folder = Path(tmp)
        (folder / "pipelines").mkdir()
        spec = "pipelines/mnist5.yaml"
        (folder / spec).write_text(SPEC.format(epochs=args.epochs))
        kiln = [str(BIN / "kiln"), "run", spec]
        run([*kiln, "--stage", "load_data", "--stage", "build_model"], folder, env)
        runs = folder / "runs" / "mnist5"
        plain = [
            str(BIN / "python"),
            str(ROOT / "benchmarks" / "plain_train.py"),
            str(runs / "load_data" / "out"),
            str(runs / "build_model" / "out"),
            str(folder / "plain"),
            f"--epochs={args.epochs}",
        ]
        commands = {"torchkiln": [*kiln, "--stage", "train"], "plain": plain}
        run([str(BIN / "python"), "-c", "import torch, torch._dynamo"], folder, env)
        print(
            f"{args.epochs} epochs of small_cnn [32, 64] on mnist_sample (3500 train, 500 val), "
            f"batch 64, AdamW, CPU, {args.threads} thread(s), whole processes\n{machine()}\n"
            f"before: {load()}",
            flush=True,
        )
        wall: dict[str, list[float]] = {name: [] for name in commands}
        epochs: dict[str, list[float]] = {name: [] for name in commands}
        for r in range(args.rounds):
            order = list(commands) if r % 2 == 0 else list(reversed(commands))
            for name in order:
                seconds, in_epochs = run(commands[name], folder, env)
                wall[name].append(seconds)
                epochs[name].append(in_epochs)
            shown = "  ".join(
                f"{n} {wall[n][-1]:.2f}s (epochs {epochs[n][-1]:.1f}s)" for n in commands
            )
            print(f"round {r + 1}: {shown}", flush=True)
        print(f"after: {load()}")
        history = json.loads((runs / "train" / "plots" / "history.json").read_text())
        plain_history = json.loads((folder / "plain" / "history.json").read_text())
    same = len(history) == len(plain_history) and all(
        record[k] == theirs[k]
        for record, theirs in zip(history, plain_history, strict=True)
        for k in theirs
    )
    for name in commands:
        median = statistics.median(wall[name])
        rest = statistics.median(w - e for w, e in zip(wall[name], epochs[name], strict=True))
        print(
            f"{name:10s} {median:.2f} s median [min {min(wall[name]):.2f}, max "
            f"{max(wall[name]):.2f}]: epochs {statistics.median(epochs[name]):.2f} s, "
            f"the rest {rest:.2f} s"
        )
    ratio = statistics.median(wall["plain"]) / statistics.median(wall["torchkiln"])
    if not same:
        print("FAIL: the plain script's history differs from the train stage's: not the same work")
        return 1
    verdict = "PASS" if ratio >= args.min_ratio else "FAIL"
    print(
        f"{verdict}: kiln run --stage train / plain script (whole processes, "
        f"{args.threads} thread(s)): {ratio:.3f}x (target >= {args.min_ratio}); "
        "same history: yes"
    )
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
