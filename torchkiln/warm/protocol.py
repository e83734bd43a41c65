"""What crosses the warm worker's socket, and where the worker's files live.

A worker belongs to one user, one repository, one interpreter and one torchkiln source:
its socket is `.kiln/warm/<key>.sock` in the repository (folder 0700, socket 0600), where
the key hashes the virtual environment (its prefix and the modification times of its
site-packages, which change when a package is installed or removed), torchkiln's version
and source files (an edited or upgraded torchkiln never runs old code), the CPU affinity,
and the environment variables that take effect when torch and its libraries load (thread
counts, visible devices, locale): a worker's children behave exactly as a process started
with the same environment would. Beside the socket: `<key>.lock`, held by the worker for
its whole life (so that only one starts), and `<key>.log`, its own output.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import sys
import sysconfig
from pathlib import Path
from typing import Any

WARM_DIR = Path(".kiln") / "warm"
#: environment variables read when torch and its libraries load: part of the key
IMPORT_TIME_PREFIXES = ("OMP_", "MKL_", "KMP_", "GOMP_", "OPENBLAS_", "CUDA_", "NVIDIA_",
                        "TORCH", "PYTORCH_", "PYTHON", "LD_", "NUMEXPR_", "LANG", "LC_",
                        "MPLBACKEND", "MPLCONFIGDIR", "HIP_", "ROCR_")  # fmt: skip
#: at most this many bytes in a request (argv, cwd, environment)
MAX_MESSAGE = 4 << 20


def source_digest() -> str:
    """torchkiln's version, where it lives, and the size and mtime of each of its files."""
    import torchkiln

    root = Path(torchkiln.__file__).parent
    digest = hashlib.sha256(f"{torchkiln.__version__}\n{root}\n".encode())
    for path in sorted(root.rglob("*.py")):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _installed() -> list[tuple[str, int]]:
    """The environment's package folders and their mtimes (an install or upgrade adds and
    removes entries in them, which changes the mtime)."""
    folders = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    found = []
    for folder in sorted(f for f in folders if f):
        try:
            found.append((folder, os.stat(folder).st_mtime_ns))
        except OSError:
            continue
    return found


def installation() -> str:
    """The interpreter, the environment's packages and torchkiln's source, as one digest:
    what changes when anything is installed, upgraded or edited."""
    blob = json.dumps([sys.prefix, sys.executable, sys.version, _installed(), source_digest()])
    return hashlib.sha256(blob.encode()).hexdigest()


def key(environ: dict[str, str] | None = None) -> str:
    environ = dict(os.environ if environ is None else environ)
    loaded = {k: v for k, v in sorted(environ.items()) if k.startswith(IMPORT_TIME_PREFIXES)}
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    blob = json.dumps([installation(), loaded, affinity, os.getuid()], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def socket_path(root: Path, worker_key: str) -> Path:
    return root / WARM_DIR / f"{worker_key}.sock"


def lock_path(socket: Path) -> Path:
    return socket.with_suffix(".lock")


def log_path(socket: Path) -> Path:
    return socket.with_suffix(".log")


def send(conn: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    frame = struct.pack("!I", len(data)) + data
    if fds:
        sent = socket.send_fds(conn, [frame], fds)
        if sent < len(frame):
            conn.sendall(frame[sent:])
    else:
        conn.sendall(frame)


def receive(conn: socket.socket, max_fds: int = 0) -> tuple[dict[str, Any] | None, list[int]]:
    """One message (None when the other side closed), and the descriptors sent with it."""
    head, fds = b"", []
    while len(head) < 4:
        if max_fds and not head:
            chunk, fds, _, _ = socket.recv_fds(conn, 4, max_fds)
        else:
            chunk = conn.recv(4 - len(head))
        if not chunk:
            return None, fds
        head += chunk
    (size,) = struct.unpack("!I", head)
    if size > MAX_MESSAGE:
        raise ValueError(f"a warm-worker message of {size} bytes")
    body = b""
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            return None, fds
        body += chunk
    return json.loads(body), fds
