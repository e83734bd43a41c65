"""The warm worker process: `python -m torchkiln.warm.server SOCKET LOCK_FD`.

It imports torch, torchkiln and the libraries stages use, without running a single torch
operation, then serves requests: each is forked into a child that becomes that `kiln run`
(its streams, environment, working directory, `sys.path` and arguments) and whose exit
status goes back to the client. It exits after `KILN_WARM_IDLE` seconds (default 90)
without a request, when its socket is removed or replaced (the repository was deleted,
another worker took over), or on SIGTERM.

Fork safety, as in multiprocessing's forkserver: fork only from a quiet process. Nothing
here starts a thread; preloading creates no OpenMP pool (torch makes it at the first
parallel operation) and no CUDA context (nothing asks for a device), and onnxruntime,
which starts a thread when imported, is left to the stages (it imports in ~0.1 s).
OpenBLAS (numpy's) may start its pthread pool at import when it may use more than one
thread; it shuts it down around fork itself (pthread_atfork). The tests check the rest.
A child resets signal handlers and reseeds torch's and numpy's generators as a fresh
process does, and runs the exit handlers registered during its run.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import selectors
import signal
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from torchkiln.warm.protocol import receive, send

#: imported before serving: what stages spend their start-up on
PRELOAD = (
    "torch",
    "torch._dynamo",  # torch.optim imports it when an optimizer is built: ~2-4 s
    "torchvision.transforms.v2",
    "safetensors.torch",
    "numpy",
    "PIL.Image",
    "onnx",
    "onnxscript",
    "matplotlib.pyplot",
    "torchkiln.runtime.engine",
    "torchkiln.runtime.train",
    "torchkiln.runtime.evaluate",
    "torchkiln.runtime.export",
    "torchkiln.runtime.exporting",
)
#: seconds without a request before the worker exits
IDLE_SECONDS = float(os.environ.get("KILN_WARM_IDLE", "90"))
#: seconds a client may take to send its request once connected
REQUEST_SECONDS = 5.0


def preload() -> None:
    os.environ.setdefault("MPLBACKEND", "Agg")
    for name in PRELOAD:
        with contextlib.suppress(Exception):  # a missing optional library stays missing
            importlib.import_module(name)
    from torchkiln.packs import load_builtins

    load_builtins()


def become(request: dict[str, Any], fds: list[int]) -> int:
    """In the forked child: turn into the requested `kiln run` and run it."""
    os.setpgid(0, 0)  # a group of its own, which its client's Ctrl-C reaches, as a terminal's
    for number in (signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP):
        signal.signal(number, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for target, fd in zip((0, 1, 2), fds, strict=True):
        os.dup2(fd, target)
        os.close(fd)
    _fresh_streams()
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = [request["argv0"], *request["argv"]]
    sys.path[:] = request["path"]
    _fresh_state()
    from torchkiln import cli
    from torchkiln.warm import client

    client.IN_CHILD = True
    code = 1
    try:
        code = cli.main(request["argv"])
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # as a cold process would: the traceback, then exit 1
        traceback.print_exc()
    finally:
        _finalize()
    return code


def _fresh_streams() -> None:
    """sys.stdin/stdout/stderr over fds 0-2, buffered as Python makes them at start-up
    (stdout by lines only on a terminal, stderr always by lines)."""
    enc, errors = sys.stdout.encoding, sys.stdout.errors
    sys.stdin = sys.__stdin__ = open(0, encoding=enc, errors=errors, closefd=False)  # noqa: SIM115
    sys.stdout = sys.__stdout__ = open(1, "w", encoding=enc, errors=errors, closefd=False)  # noqa: SIM115
    sys.stderr = sys.__stderr__ = open(  # noqa: SIM115
        2, "w", buffering=1, encoding=enc, errors="backslashreplace", closefd=False
    )


def _fresh_state() -> None:
    """What a new process would start with: fresh entropy for torch's generators (each
    process seeds them at random; CUDA's only when first used) and numpy's global one
    (Python's `random` reseeds itself at fork), no exit handlers of the worker's."""
    import torch

    torch.seed()
    with contextlib.suppress(ImportError):
        import numpy

        numpy.random.seed()
    atexit._clear()


def _finalize() -> None:
    """As the interpreter does at exit: join threads, run exit handlers, flush."""
    with contextlib.suppress(Exception):
        import threading

        threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    import logging

    logging.shutdown()
    if "multiprocessing.util" in sys.modules:  # daemonic helpers (DataLoader workers)
        sys.modules["multiprocessing.util"]._exit_function()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


class Worker:
    """The serving loop: accept, fork, report each child's status, watch the clients."""

    def __init__(self, path: Path, lock: int) -> None:
        self.path, self.lock = path, lock
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        old = os.umask(0o177)  # owner-only from the first moment
        try:  # relative to the working directory (the socket's folder): a long path
            self.listener.bind(temporary.name)  # to the repository is no matter

        finally:
            os.umask(old)
        os.chmod(temporary, 0o600)
        self.listener.listen(64)
        os.replace(temporary, path)  # appears only once it accepts
        self.identity = path.stat().st_ino
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.children: dict[int, socket.socket] = {}

    def serve(self) -> None:
        last = time.monotonic()
        try:
            while True:
                for pid, status in self._finished():
                    conn = self.children.pop(pid)
                    with contextlib.suppress(KeyError):  # unless its client left
                        self.selector.unregister(conn)
                    with contextlib.suppress(OSError):
                        send(conn, status_message(status))
                    conn.close()
                    last = time.monotonic()
                if self._retired() or time.monotonic() - last > IDLE_SECONDS:
                    if not self.children:
                        break
                    if self.listener.fileno() >= 0:  # no new requests from here on
                        self.selector.unregister(self.listener)
                        self.listener.close()
                for event, _ in self.selector.select(timeout=0.2):
                    if event.fileobj is self.listener:
                        self._accept()
                        last = time.monotonic()
                    else:
                        self._client_left(event.data)
        finally:
            with contextlib.suppress(OSError):
                if self.path.stat().st_ino == self.identity:
                    self.path.unlink()

    def _retired(self) -> bool:
        """Whether the socket was removed or replaced (another worker owns the key now)."""
        try:
            return self.path.stat().st_ino != self.identity
        except OSError:
            return True

    def _accept(self) -> None:
        """Read a request and fork its child (a bad or slow request is dropped)."""
        conn, _ = self.listener.accept()
        conn.settimeout(REQUEST_SECONDS)
        try:
            request, fds = receive(conn, max_fds=3)
        except (OSError, ValueError) as exc:
            print(f"dropped a request: {exc}", flush=True)
            conn.close()
            return
        if request is None or len(fds) != 3:
            print(f"dropped a request with {len(fds)} descriptors", flush=True)
            conn.close()
            for fd in fds:
                os.close(fd)
            return
        conn.settimeout(None)
        pid = os.fork()
        if pid == 0:  # the child: nothing of the worker's but the preloaded modules
            code = 1
            try:
                self._forget(conn)
                code = become(request, fds)
            except BaseException:  # it could not become the run (its folder is gone)
                traceback.print_exc()
            finally:
                os._exit(code)
        for fd in fds:
            os.close(fd)
        print(f"child {pid}: kiln {' '.join(request['argv'])}", flush=True)
        try:
            send(conn, {"pid": pid})
        except OSError:  # the client left already
            _stop(pid)
        self.children[pid] = conn
        self.selector.register(conn, selectors.EVENT_READ, pid)

    def _forget(self, own: socket.socket) -> None:
        """In a child: close what belongs to the worker, so that a child outliving it
        never holds its lock, its socket or another client's connection open."""
        self.selector.close()
        self.listener.close()
        for conn in (own, *self.children.values()):
            conn.close()
        os.close(self.lock)

    def _client_left(self, pid: int) -> None:
        """A client closed its connection early (killed): its child must not run unseen."""
        conn = self.children[pid]
        with contextlib.suppress(OSError):
            conn.setblocking(False)
            if conn.recv(1) == b"":
                self.selector.unregister(conn)
                _stop(pid)

    def _finished(self) -> list[tuple[int, int]]:
        done = []
        for pid in list(self.children):
            finished, status = os.waitpid(pid, os.WNOHANG)
            if finished:
                done.append((pid, status))
        return done


def _stop(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)


def status_message(status: int) -> dict[str, int]:
    if os.WIFSIGNALED(status):
        return {"signal": os.WTERMSIG(status)}
    return {"exit": os.waitstatus_to_exitcode(status)}


def main() -> None:
    path, lock = Path(sys.argv[1]).resolve(), int(sys.argv[2])
    os.chdir(path.parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the clients forward Ctrl-C to children
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    preload()
    import torch

    threads = len(os.listdir(f"/proc/{os.getpid()}/task"))
    print(f"torchkiln warm worker {os.getpid()}: {threads} thread(s), "
          f"CUDA initialised: {torch.cuda.is_initialized()}", flush=True)  # fmt: skip
    if torch.cuda.is_initialized():  # a forked child could not use it: never serve
        sys.exit("a preloaded module initialised CUDA; not serving (runs go cold)")
    Worker(path, lock).serve()
    print(f"torchkiln warm worker {os.getpid()}: done", flush=True)


if __name__ == "__main__":  # pragma: no cover
    main()
