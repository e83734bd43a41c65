"""How long `kiln validate` takes on the shipped examples, next to `python -c "import torch"`.

Validation never imports torch, so it should cost well under half of a bare torch import.
Each command runs as its own process (wall time, as a user waits for it), alternating, and
the best of N runs is kept to filter out noise from the machine.

    .venv/bin/python benchmarks/validate_speed.py [--runs 5] [--limit 0.5] [--quick]

Exits 1 when validate takes `--limit` x the torch import or more, or when a command fails.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from machine import load, machine

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin/: its python and its kiln


def wall_time(cmd: list[str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each command (best kept)")
    parser.add_argument("--limit", type=float, default=0.5, help="largest acceptable ratio")
    parser.add_argument("--quick", action="store_true", help="--runs 2")
    args = parser.parse_args()
    if args.quick:
        args.runs = 2

    specs = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "pipelines").glob("*.yaml"))
    if not specs:
        sys.exit("no specs in pipelines/")
    validate = [str(BIN / "kiln"), "validate", *specs]
    import_torch = [str(BIN / "python"), "-c", "import torch"]

    wall_time(validate)  # warm the file cache for both before timing
    wall_time(import_torch)
    times: dict[str, list[float]] = {"validate": [], "torch": []}
    for _ in range(args.runs):
        times["validate"].append(wall_time(validate))
        times["torch"].append(wall_time(import_torch))
    best_validate, best_torch = min(times["validate"]), min(times["torch"])
    ratio = best_validate / best_torch

    print(f"{machine()}, {load()}")
    print(f"kiln validate ({len(specs)} specs): {best_validate:.3f} s  (best of {args.runs})")
    print(f'python -c "import torch":    {best_torch:.3f} s  (best of {args.runs})')
    verdict = "PASS" if ratio < args.limit else "FAIL"
    print(f"{verdict}: kiln validate / import torch: {ratio:.2f}x (target < {args.limit:.2f})")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
