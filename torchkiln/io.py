"""Atomic, byte-stable file output. Nothing here imports torch.

Every output goes to a temporary file in the same folder, is flushed to the disk
(fsync), and is renamed into place, so a crash or a power cut never leaves a half-written
file for DVC to cache. JSON is written with sorted keys and a trailing newline, so equal
content means equal bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torchkiln.errors import InputError, WriteError


def _fsync(path: Path, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:  # some platforms cannot open a folder: nothing more to do there
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` for the caller (or a library) to write; on
    success, flush it to the disk and rename it over `path`. On failure nothing changes.

    A failure to write (no space left, an I/O error, a read-only folder: an OSError from
    the writer, the flush or the rename, also one a library wrapped in an error of its
    own) is raised as a `WriteError` naming `path`, never as a traceback."""
    tmp_path: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        os.chmod(tmp_path, 0o644)  # mkstemp makes 0600 files; outputs are ordinary files
        yield tmp_path
        _fsync(tmp_path)
        os.replace(tmp_path, path)
        _fsync(path.parent, directory=True)  # the rename itself survives a crash
    except Exception as exc:
        cause = _write_failure(exc, path, tmp_path)
        if cause is None:
            raise
        raise WriteError(path.as_posix(), cause) from exc
    finally:
        if tmp_path is not None:
            with contextlib.suppress(OSError):
                tmp_path.unlink(missing_ok=True)


def _write_failure(exc: BaseException, path: Path, tmp: Path | None) -> OSError | None:
    """The OSError behind `exc` (itself, or what a library's own error was raised from or
    during) when it is about writing `path`: not one naming another file (a missing
    source of a copy is a failure to read, reported as it is)."""
    target = os.path.abspath(path)
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError):
            if seen.filename is None:
                return seen
            named = os.path.abspath(os.fsdecode(seen.filename))
            ours = named == target or target.startswith(named.rstrip(os.sep) + os.sep)
            return seen if ours or (tmp is not None and named == os.path.abspath(tmp)) else None
        seen = seen.__cause__ or seen.__context__
    return None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_copy(source: Path, target: Path) -> None:
    """Copy a file atomically (never a half-copied `target`)."""
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def json_text(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json_text(data))


def read_json(path: Path) -> Any:
    """A JSON file a stage wrote. One that is no longer JSON (truncated, edited by hand) is
    an `InputError` naming it, so the runner can say which stage writes it anew."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise InputError(f"cannot read {path.as_posix()}: not valid JSON ({exc})", path) from exc


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_tree(folder: Path) -> str:
    """A digest of every file under `folder` (relative names and contents), order-independent."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(b"\0")
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()
