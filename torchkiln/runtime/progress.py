"""Progress reporting: a bar on a terminal, plain lines otherwise (logs, CI, dvc repro)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def helper_rank() -> bool:
    """A worker other than rank 0 of a distributed stage: it reports nothing but errors."""
    return os.environ.get("RANK", "0") != "0"


def interactive() -> bool:
    """Bars only on a terminal; KILN_PROGRESS=lines|bar overrides."""
    if helper_rank():
        return False
    forced = os.environ.get("KILN_PROGRESS")
    if forced in ("lines", "bar"):
        return forced == "bar"
    return sys.stderr.isatty()


def log(message: str) -> None:
    if not helper_rank():
        print(message, file=sys.stderr, flush=True)


def progress(items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a tqdm bar on a terminal; elsewhere one line at the start and the end."""
    if interactive():
        from tqdm import tqdm

        yield from tqdm(items, desc=desc, total=total, leave=False, dynamic_ncols=True)
        return
    start = time.perf_counter()
    count = 0
    for item in items:
        count += 1
        yield item
    if count and time.perf_counter() - start > 2:
        log(f"{desc}: {count} done in {time.perf_counter() - start:.1f}s")


class EpochProgress:
    """A step bar per epoch on a terminal; one summary line per epoch elsewhere."""

    def __init__(self, epochs: int, steps: int) -> None:
        self.epochs, self.steps = epochs, steps
        self.bar: Any = None
        self.started = 0.0

    def start(self, epoch: int) -> None:
        self.started = time.perf_counter()
        if interactive():
            from tqdm import tqdm

            self.bar = tqdm(
                total=self.steps,
                desc=f"epoch {epoch}/{self.epochs}",
                leave=False,
                dynamic_ncols=True,
            )

    def step(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def end(self, epoch: int, record: dict[str, Any], note: str = "") -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        shown = "  ".join(
            f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
            for k, v in record.items()
            if k != "epoch"
        )
        seconds = time.perf_counter() - self.started
        log(f"epoch {epoch}/{self.epochs}  {shown}  ({seconds:.1f}s){note}")
