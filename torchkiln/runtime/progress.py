"""Progress reporting: a bar on a terminal, plain lines otherwise (logs, CI, dvc repro)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def interactive() -> bool:
    """Bars only on a terminal; KILN_PROGRESS=lines|bar overrides."""
    forced = os.environ.get("KILN_PROGRESS")
    if forced in ("lines", "bar"):
        return forced == "bar"
    return sys.stderr.isatty()


def log(message: str) -> None:
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
