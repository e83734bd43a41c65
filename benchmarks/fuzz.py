"""Long fuzzing runs: any number of generated cases through the same targets as the CI fuzz
tests (tests/test_fuzz_specs.py, tests/test_fuzz_data.py), from tests/fuzzing.py.

    .venv/bin/python benchmarks/fuzz.py --cases 100000 [--target spec ...] [--seed 0]

The cases run in rounds of `--round`, shared among the targets by their weights (specs
most); each round of each target is one hypothesis run seeded with `--seed` + the round's
number, so a run is reproducible and hypothesis' memory stays bounded however long it
goes. Unlike a test, a run does not stop at the first failure: it counts every case and
prints each distinct failure once (with its first case), then exits 1 if there was any.
Ctrl-C stops it early and prints the counts so far (exit 1).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the harness lives beside the tests that use it

import fuzzing  # noqa: E402


def rounds(cases: int, names: list[str], per_round: int) -> list[list[tuple[str, int]]]:
    """The plan: rounds of cases shared among the targets by their weights, so that a run
    stopped early (Ctrl-C) has covered every target in proportion."""
    weights = {n: fuzzing.TARGETS[n].weight for n in names}
    total = sum(weights.values())
    plan: list[list[tuple[str, int]]] = []
    left = cases
    while left > 0:
        size = min(per_round, left)
        share = {n: size * w // total for n, w in weights.items()}
        share[names[0]] += size - sum(share.values())
        plan.append([(n, k) for n, k in share.items() if k > 0])
        left -= size
    return plan


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000, help="cases in all (default 2000)")
    parser.add_argument(
        "--target",
        action="append",
        choices=sorted(fuzzing.TARGETS),
        help="only these targets (repeatable; default: all)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the first round")
    parser.add_argument("--round", type=int, default=1000, help="cases per round (all targets)")
    args = parser.parse_args()

    names = args.target or list(fuzzing.TARGETS)
    tallies = {name: fuzzing.Tally(name) for name in names}
    started = time.perf_counter()
    stopped = False
    with tempfile.TemporaryDirectory(prefix="kiln-fuzz-") as scratch:
        roots = {name: Path(scratch) / name for name in names}
        for root in roots.values():
            root.mkdir()
        try:
            for number, plan in enumerate(rounds(args.cases, names, args.round)):
                for name, size in plan:
                    target, tally = fuzzing.TARGETS[name], tallies[name]
                    try:
                        fuzzing.run_cases(target, size, roots[name], args.seed + number, tally)
                    except Exception as exc:  # the harness itself (generating a case)
                        message = f"harness error: {type(exc).__name__}: {exc}"
                        tally.failures.setdefault(message, message)
                        print(f"FAILURE ({name}): {message}", flush=True)
                done = sum(t.cases for t in tallies.values())
                found = sum(len(t.failures) for t in tallies.values())
                elapsed = time.perf_counter() - started
                print(f"round {number + 1}: {done} cases, {elapsed:.0f} s, {found} failures",
                      flush=True)  # fmt: skip
        except KeyboardInterrupt:
            stopped = True
            print("stopped (Ctrl-C): the counts below are the cases run so far", flush=True)
    elapsed = time.perf_counter() - started
    for tally in tallies.values():
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(tally.outcomes.items()))
        print(
            f"{tally.target:15} {tally.cases:7d} cases  {tally.seconds:8.1f} s  "
            f"{len(tally.failures)} failures  ({outcomes})"
        )
    cases = sum(t.cases for t in tallies.values())
    failures = [(t.target, m) for t in tallies.values() for m in t.failures.values()]
    print(f"total          {cases:7d} cases  {elapsed:8.1f} s  {len(failures)} failures")
    for target, message in failures:
        print(f"\nFAILURE ({target}): {message}")
    return 1 if failures or stopped else 0


if __name__ == "__main__":
    sys.exit(main())
