"""Whole-pipeline cost of DVC's one-process-per-stage against running it in one process.

Copies a shipped spec into a temporary git + DVC repository, then times, alternating:
`kiln run SPEC` (every stage in one Python process: one `import torch`, as a plain script
would pay) and `dvc repro -f --no-run-cache` (six processes, each importing what its stage
needs, plus DVC's own bookkeeping). Prints both wall times and the ratio; DESIGN.md's goal
is at most 1.5x.

    python benchmarks/pipeline_overhead.py [--spec pipelines/mnist_cnn.yaml] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(args: list[str], cwd: Path) -> float:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env["KILN_PROGRESS"] = "lines"
    start = time.perf_counter()
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="pipelines/mnist_cnn.yaml")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        (repo / "pipelines").mkdir()
        shutil.copy(ROOT / args.spec, repo / args.spec)
        for command in (["git", "init", "-q"], [str(BIN / "dvc"), "init", "-q"]):
            _run(command, repo)
        _run([str(BIN / "kiln"), "dvc"], repo)
        one, many = [], []
        for _ in range(args.rounds):
            one.append(_run([str(BIN / "kiln"), "run", args.spec], repo))
            many.append(_run([str(BIN / "dvc"), "repro", "-f", "--no-run-cache"], repo))
    a, b = statistics.median(one), statistics.median(many)
    print(f"{args.spec}: one process (kiln run) {a:.1f}s, dvc repro {b:.1f}s, ratio {b / a:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
