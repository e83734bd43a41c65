"""What `kiln run` does first: hand the run to a warm worker when one is ready (see the
package docstring), start one in the background when it would help, else run here.

Light on purpose: this runs before anything heavy is imported (no torch, no numpy).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

from torchkiln.errors import Terminated
from torchkiln.warm import protocol
from torchkiln.warm.protocol import WARM_DIR, receive, send, socket_path

#: set in a worker's children, so that a child never hands itself to a worker again
IN_CHILD = False
#: signals a client passes on to its child (the child is not in the terminal's group)
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def enabled() -> bool:
    """Off with KILN_WARM=0, in a worker's own children, and in distributed workers."""
    if os.environ.get("KILN_WARM", "") == "0" or IN_CHILD:
        return False
    return "RANK" not in os.environ and sys.platform.startswith("linux")


def wanted() -> bool:
    """Whether to start a worker when none is running: under `dvc repro` (more stages
    follow) or when asked (KILN_WARM=1)."""
    return os.environ.get("KILN_WARM") == "1" or "DVC_STAGE" in os.environ


def run_warm(argv: list[str]) -> int | None:
    """Run `kiln ARGV` in a warm worker; None when there is none to use (then run here)."""
    root = Path.cwd()
    if not (WARM_DIR.is_dir() or wanted()) or not _private_folder(WARM_DIR):
        return None  # no worker can be running here, and none is wanted
    # relative to the working directory: a socket's address holds at most 107 bytes
    path = socket_path(Path(), protocol.key())
    pending: list[int] = []  # signals that came before the child's pid did
    child: list[int] = []

    def forward(signum: int, frame: object) -> None:
        if not child:
            pending.append(signum)
            return
        _deliver(child[0], signum)

    def suspend(signum: int, frame: object) -> None:
        """Ctrl-Z: the child is not in the terminal's group, so stop it with us, and let it
        go on when we do (`fg`, `bg`)."""
        if child:
            _deliver(child[0], signal.SIGSTOP)
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)  # stopped here until SIGCONT
        signal.signal(signal.SIGTSTP, suspend)
        if child:
            _deliver(child[0], signal.SIGCONT)

    previous = {s: signal.signal(s, forward) for s in FORWARDED}
    previous[signal.SIGTSTP] = signal.signal(signal.SIGTSTP, suspend)
    try:
        conn = _connect(path)
        if conn is None:
            if wanted():
                start_worker(path)
            return _cold(pending)
        with conn:
            try:
                request = {"argv": argv, "cwd": str(root), "env": dict(os.environ),
                           "path": list(sys.path), "argv0": sys.argv[0]}  # fmt: skip
                send(conn, request, [0, 1, 2])
                started, _ = receive(conn)
            except OSError:  # a closed standard stream, a worker gone: run here
                return _cold(pending)
            if started is None:  # the worker went away before starting it: run here
                return _cold(pending)
            child.append(int(started["pid"]))
            for signum in pending:
                forward(signum, None)
            try:  # a forwarded signal does not interrupt the wait (PEP 475)
                status, _ = receive(conn)
            except OSError:  # reset by a dying worker
                status = None
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if status is None:  # the worker died; the child gets SIGTERM from nobody else
        with contextlib.suppress(ProcessLookupError):
            os.kill(child[0], signal.SIGTERM)
        print(
            "error: the warm worker stopped before the stage finished; run it again "
            "(KILN_WARM=0 runs without it)",
            file=sys.stderr,
        )
        return 1
    if "signal" in status:  # die the way the child did, as DVC would have seen it
        number = int(status["signal"])
        sys.stdout.flush()
        signal.signal(number, signal.SIG_DFL)
        os.kill(os.getpid(), number)
        return 128 + number
    return int(status["exit"])


def _deliver(child: int, signum: int) -> None:
    """Ctrl-C and Ctrl-Z reach a terminal's whole foreground group: the child and what it
    started (its own group, once it has made it); any other signal the child only."""
    if signum in (signal.SIGINT, signal.SIGSTOP, signal.SIGCONT):
        with contextlib.suppress(OSError):
            os.killpg(child, signum)
            return
    with contextlib.suppress(ProcessLookupError):
        os.kill(child, signum)


def _cold(pending: list[int]) -> int | None:
    """Run here after all; a Ctrl-C or SIGTERM that came meanwhile is not lost."""
    if signal.SIGINT in pending:
        raise KeyboardInterrupt
    if signal.SIGTERM in pending:
        raise Terminated
    if pending:
        signal.signal(pending[0], signal.SIG_DFL)
        os.kill(os.getpid(), pending[0])
    return None


def _private_folder(folder: Path) -> bool:
    """`.kiln/warm` exists, is ours and nobody else's (0700) and ignored by git; False
    when it cannot be."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(folder)
        if info.st_uid != os.getuid() or not stat.S_ISDIR(info.st_mode):
            return False
        if stat.S_IMODE(info.st_mode) != 0o700:
            os.chmod(folder, 0o700)
        if not (folder / ".gitignore").exists():  # sockets and logs are never versioned
            ignore = os.open(folder / ".gitignore", os.O_WRONLY | os.O_CREAT, 0o600)
            with os.fdopen(ignore, "w") as file:
                file.write("*\n")
    except OSError:  # a read-only checkout, a folder of another user
        return False
    return True


def _connect(path: Path) -> socket.socket | None:
    """A connection to the worker at `path`; None when there is none (a socket left by a
    worker that died is removed)."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISSOCK(info.st_mode) or info.st_uid != os.getuid():
        return None  # not a worker's socket, or not ours: never talk to it
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except OSError as exc:
        conn.close()
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            _remove_stale(path, info.st_ino)
        return None
    return conn


def _remove_stale(path: Path, inode: int) -> None:
    """Remove a socket nobody listens on, unless a worker has replaced it meanwhile."""
    with contextlib.suppress(OSError):
        if os.lstat(path).st_ino == inode:
            path.unlink()


def start_worker(path: Path) -> bool:
    """Start a worker for this repository in the background, unless one is already
    running or starting (it holds the lock). Its own session, so the terminal's Ctrl-C
    and the end of `dvc repro` leave it alone; its output goes to its log, not to any of
    our streams (DVC waits for those to close); it exits when idle."""
    lock = os.open(protocol.lock_path(path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(lock)
        return False  # a worker holds it
    try:
        log = os.open(
            protocol.log_path(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600
        )
        try:
            subprocess.Popen(
                [sys.executable, "-m", "torchkiln.warm.server", os.path.abspath(path), str(lock)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                close_fds=True,
                pass_fds=(lock,),  # the worker keeps the lock for its whole life
                cwd=path.parent,
            )
        finally:
            os.close(log)
    except OSError:
        return False
    finally:
        os.close(lock)
    return True


__all__ = ["WARM_DIR", "enabled", "run_warm", "start_worker"]
