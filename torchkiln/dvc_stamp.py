"""Whether `kiln repro` can skip compiling dvc.yaml: nothing the last compile read changed.

Before DVC starts, `kiln repro` validates every spec and compiles dvc.yaml, as `kiln dvc`
does: about 0.4 s for the 12 example specs, paid on every repro, even one with nothing to
do. After a compile that leaves dvc.yaml as the specs say, `.kiln/dvc-compile.json` records
what it read. That is the list of specs, the content of each spec file and of every file
they extend, the installation (interpreter, packages, torchkiln's source) and the content of
dvc.yaml. The next `kiln repro` skips the compile when all of them are as recorded, and
compiles as before when anything differs or cannot be read.

Specs that load plugins are never skipped: a plugin's own imports are not tracked.

Light on purpose: deciding must cost far less than compiling (no pydantic, no schemas).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from torchkiln.errors import KilnError
from torchkiln.io import atomic_write_text
from torchkiln.layout import DVC_FILE
from torchkiln.warm.protocol import installation

STAMP = Path(".kiln") / "dvc-compile.json"
#: bump when what a stamp records changes meaning
FORMAT = 1


def _content(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _state(specs: Sequence[Path], inputs: Iterable[str]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "installation": installation(),
        "specs": [spec.as_posix() for spec in specs],
        "inputs": {name: _content(Path(name)) for name in sorted(set(inputs))},
        "dvc_yaml": _content(DVC_FILE),
    }


def fresh(specs: Sequence[Path]) -> bool:
    """True when dvc.yaml is what compiling `specs` would write, as far as the stamp of the
    last compile can tell; False whenever in doubt."""
    try:
        recorded = json.loads(STAMP.read_text(encoding="utf-8"))
        return recorded == _state(specs, recorded["inputs"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def record(specs: Sequence[Path], files: Iterable[str], *, plugins: bool, began: float) -> None:
    """After a compile of `specs`, begun at `began` (time.time()), that left dvc.yaml up to
    date: remember what it read (`files`: the specs and the files they extend). Forget
    instead when a spec loads plugins, or when a file it read changed while it ran."""
    with contextlib.suppress(OSError, KilnError):  # a read-only checkout: compile each time
        names = sorted({*(spec.as_posix() for spec in specs), *files})
        if plugins or any(Path(name).stat().st_mtime > began for name in names):
            STAMP.unlink(missing_ok=True)
            return
        STAMP.parent.mkdir(parents=True, exist_ok=True)
        state = _state(specs, names)
        atomic_write_text(STAMP, json.dumps(state, indent=1, sort_keys=True) + "\n")
