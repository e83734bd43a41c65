"""One stage run at a time in a workspace: `kiln run` holds a lock per stage while it runs.

A second `kiln run` of the same stage (two terminals, two DVC runs in the same folder)
is refused at once with a message naming the process that holds it, rather than
interleaving its writes with the first. The lock is an OS file lock (`flock`) on
`.kiln/locks/<pipeline>-<stage>.lock`: it goes away with its process, even one killed
with SIGKILL, so a crash never leaves a stage locked. DVC's queued experiments each run
in their own workspace copy, and so never contend.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from torchkiln.errors import RunError

LOCKS = Path(".kiln") / "locks"


@contextlib.contextmanager
def stage_lock(pipeline: str, stage: str) -> Iterator[None]:
    """Hold the stage's lock for the block; refuse if another process holds it."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, as before
        yield
        return
    LOCKS.mkdir(parents=True, exist_ok=True)
    path = LOCKS / f"{pipeline}-{stage}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise RunError(
                f"stage {stage!r} of {pipeline} is already running here ({holder}); wait "
                "for it to finish (or stop it) and run again"
            ) from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
