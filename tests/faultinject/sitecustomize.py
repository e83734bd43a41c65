"""Fault injection for the fault tests (tests/test_faults*.py, benchmarks/faults.py): never
part of torchkiln, and inert unless a test puts this folder on PYTHONPATH *and* sets
KILN_TEST_FAULT.

Python imports `sitecustomize` at start-up from the first folder on its path that holds
one, so a `kiln` process started with PYTHONPATH=tests/faultinject and

    KILN_TEST_FAULT='{"op": "replace", "match": "runs/p/train/out$", "when": "after",
                      "action": "kill"}'

wraps the file-system calls torchkiln's writes go through: at the `nth` call (default 1)
whose path matches `match` (a regular expression searched in the path, relative to the
working folder when it is inside it, POSIX separators), it kills its own process with
SIGKILL (`action: kill`, `when: before` or `after` the call), or makes the call fail with
an OSError (`action: ENOSPC`, `EIO`, `EROFS`, `EACCES`...: any errno name).

ops: `replace` (os.replace/os.rename, matched on the destination; `source` matches the
source too), `open` (builtins.open/io.open for writing), `fsync` (os.fsync, matched on the
file the descriptor names), `mkdir` (os.mkdir), `rmtree` (shutil.rmtree).

KILN_TEST_FROM_DISK=1 keeps image-folder splits on disk however small they are (torchkiln
decodes a split that fits in memory once, and then needs no DataLoader workers), so a test
with `num_workers: 2` on a tiny image folder really has worker processes.

Only kiln processes are touched (`kiln ...` or `python -m torchkiln.cli ...`: DVC, which
inherits the environment under `dvc repro`, is not), and with `rank` only the distributed
worker of that rank. Each time the fault fires it appends one line to KILN_TEST_FAULT_LOG
(when set) before acting, so a test knows it really was injected.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import re
import shutil
import signal
import sys


def _is_kiln() -> bool:
    argv = list(getattr(sys, "orig_argv", sys.argv))
    if any(os.path.basename(a) == "kiln" for a in argv[1:2]):
        return True
    return "torchkiln.cli" in argv


def _install(spec: dict) -> None:
    op = spec["op"]
    pattern = re.compile(spec.get("match", ""))
    source = re.compile(spec["source"]) if spec.get("source") else None
    nth = int(spec.get("nth", 1))
    when = spec.get("when", "before")
    action = spec.get("action", "kill")
    log = os.environ.get("KILN_TEST_FAULT_LOG")
    seen = [0]
    cwd = os.getcwd()

    def rel(path: object) -> str:
        text = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path)
        absolute = os.path.abspath(text)
        if absolute.startswith(cwd + os.sep):
            absolute = absolute[len(cwd) + 1 :]
        return absolute.replace(os.sep, "/")

    def hit(path: object, src: object = None) -> bool:
        if not pattern.search(rel(path)):
            return False
        if source is not None and (src is None or not source.search(rel(src))):
            return False
        seen[0] += 1
        if seen[0] != nth:
            return False
        if log:
            with _real_open(log, "a") as fh:
                fh.write(f"{os.getpid()} {op} {action} {when} {rel(path)}\n")
        return True

    def act(path: object) -> None:
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        number = getattr(errno, action)
        raise OSError(number, os.strerror(number), os.fsdecode(path))

    def wrap(real, first_path, source_index=None):
        def call(*args, **kwargs):
            path = first_path(args, kwargs)
            src = args[source_index] if source_index is not None else None
            if path is None or not hit(path, src):
                return real(*args, **kwargs)
            if action != "kill" or when == "before":
                act(path)
            result = real(*args, **kwargs)
            act(path)
            return result

        return call

    if op == "replace":
        target = lambda a, k: a[1] if len(a) > 1 else k.get("dst")  # noqa: E731
        os.replace = wrap(os.replace, target, source_index=0)
        os.rename = wrap(os.rename, target, source_index=0)
    elif op == "open":

        def writing(a, k):
            mode = a[1] if len(a) > 1 else k.get("mode", "r")
            if isinstance(a[0], int) or not any(c in mode for c in "wax+"):
                return None
            return a[0]

        builtins.open = io.open = wrap(_real_open, writing)
    elif op == "fsync":

        def named(a, k):
            try:
                return os.readlink(f"/proc/self/fd/{a[0]}")
            except OSError:
                return None

        os.fsync = wrap(os.fsync, named)
    elif op == "mkdir":
        os.mkdir = wrap(os.mkdir, lambda a, k: a[0] if a else k.get("path"))
    elif op == "rmtree":
        shutil.rmtree = wrap(shutil.rmtree, lambda a, k: a[0] if a else k.get("path"))
    else:
        raise SystemExit(f"KILN_TEST_FAULT: unknown op {op!r}")


def _keep_on_disk() -> None:
    """Make `ImageIndexSplit.materialize` a no-op once torchkiln.vision.loading is imported."""
    import importlib.abc
    import importlib.util

    name = "torchkiln.vision.loading"

    class After(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path, target=None):
            if fullname != name:
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(fullname)
            real = spec.loader.exec_module

            def exec_module(module):
                real(module)
                module.ImageIndexSplit.materialize = lambda self, max_bytes=0: self

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, After())


_real_open = builtins.open
if os.environ.get("KILN_TEST_FROM_DISK") and _is_kiln():
    _keep_on_disk()
_wanted = os.environ.get("KILN_TEST_FAULT")
if _wanted and _is_kiln():
    _spec = json.loads(_wanted)
    if str(_spec.get("rank", os.environ.get("RANK", "0"))) == os.environ.get("RANK", "0"):
        _install(_spec)
