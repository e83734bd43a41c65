"""Ctrl-C and SIGTERM while a stage runs: raised at once (`KeyboardInterrupt`,
`Terminated`), except inside `held()`, where the signal is kept and raised when the block
ends.

Python drops an exception raised in an at-fork hook or in `__del__` (it prints
"Exception ignored" with a traceback, and carries on). A DataLoader's iterator forks its
worker processes when it starts (running `logging`'s at-fork hook) and stops them in
`__del__`, every epoch, so a Ctrl-C landing in either was lost and the run went on
training. The loop starts and ends each iterator inside `held()` (runtime/loop.py).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

from torchkiln.errors import Terminated

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_holding = 0
_pending: int | None = None


def _raise(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated


def _handler(signum: int, frame: object) -> None:
    global _pending
    if _holding:
        _pending = signum
        return
    _raise(signum)


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """SIGINT and SIGTERM go through `_handler` for the block (in the main thread; in
    another, where Python cannot set handlers, the block runs as it is)."""
    try:
        previous = {s: signal.signal(s, _handler) for s in _SIGNALS}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old if old is not None else signal.SIG_DFL)


@contextlib.contextmanager
def held() -> Iterator[None]:
    """A stop signal received in the block is raised when it ends, not inside it."""
    global _holding, _pending
    _holding += 1
    try:
        yield
    finally:
        _holding -= 1
        if not _holding and _pending is not None:
            signum, _pending = _pending, None
            _raise(signum)
