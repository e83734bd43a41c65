"""Loading a spec's `plugins:` (built-in packs and entry points: `torchkiln.packs`).

A spec's plugin is an importable module name (`my_project.models`) or a `.py` file
path relative to the spec, inside the repository (the working directory): a file outside
it is refused before it is imported, since DVC cannot track it as a dependency. Loading is
idempotent, so validating many specs that name the same plugin imports it once. Nothing is
added to `sys.path`: a module plugin must be importable (install your project with
`pip install -e .`) or be given as a file.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType


class PluginError(Exception):
    """A plugin could not be found or raised while being imported."""


@dataclass(frozen=True)
class Plugin:
    entry: str
    module: ModuleType
    #: Source files/folders inside the working directory, as POSIX paths (DVC dependencies).
    sources: tuple[str, ...]


_by_key: dict[str, Plugin] = {}


def describe_exception(exc: BaseException) -> str:
    """`ValueError: boom (at plugins/models.py:12)`: the exception and its innermost user frame."""
    where = ""
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        if not _machinery(frame.filename):
            where = f" (at {_relative(Path(frame.filename))}:{frame.lineno})"
            break
    text = str(exc)
    return f"{type(exc).__name__}: {text}{where}" if text else f"{type(exc).__name__}{where}"


def _machinery(filename: str) -> bool:
    """Frames of the import system and of torchkiln's own plugin loading."""
    path = filename.replace("\\", "/")
    return (
        "importlib" in path or "/torchkiln/registry/" in path or path.endswith("torchkiln/packs.py")
    )


def _relative(path: Path) -> str:
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _inside_cwd(path: Path) -> str | None:
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return None


def _load_file(entry: str, spec_dir: Path) -> Plugin:
    path = (spec_dir / entry).resolve()
    key = f"file:{path}"
    if key in _by_key:
        return _by_key[key]
    if not path.is_file():
        raise PluginError(
            f"plugin file {entry!r} not found (looked for {_relative(path)}; "
            "file plugins are relative to the spec)"
        )
    if _inside_cwd(path) is None:  # checked before importing: its code never runs
        raise PluginError(
            f"plugin file {entry!r} is outside the repository ({path.as_posix()} is not under "
            f"{Path.cwd().resolve().as_posix()}): DVC cannot track it, so editing it would "
            "rerun nothing; move it into the repository (e.g. plugins/) or install it as a "
            "package and name its module"
        )
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:10]
    module_name = f"torchkiln_plugin_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # sys.exit() in a plugin must not end kiln
        del sys.modules[module_name]
        raise PluginError(f"plugin {entry!r} failed on import: {describe_exception(exc)}") from exc
    sources = tuple(s for s in [_inside_cwd(path)] if s)
    _by_key[key] = plugin = Plugin(entry, module, sources)
    return plugin


def _load_module(entry: str) -> Plugin:
    key = f"module:{entry}"
    if key in _by_key:
        return _by_key[key]
    try:
        found = importlib.util.find_spec(entry)
    except (ImportError, ValueError) as exc:
        found, why = None, str(exc)
    else:
        why = f"No module named {entry!r}"
    if found is None:
        hint = ""
        top = entry.split(".")[0]
        if (Path.cwd() / top).exists():
            hint = (
                f"; ./{top} exists but is not importable: install your project "
                "(pip install -e .) or name the plugin by its .py file path"
            )
        raise PluginError(f"cannot import plugin {entry!r}: {why}{hint}")
    try:
        module = importlib.import_module(entry)
    except (Exception, SystemExit) as exc:  # sys.exit() in a plugin must not end kiln
        raise PluginError(f"plugin {entry!r} failed on import: {describe_exception(exc)}") from exc
    origin = Path(found.origin) if found.origin else None
    if found.submodule_search_locations:
        origin = Path(next(iter(found.submodule_search_locations)))
    sources = tuple(s for s in [_inside_cwd(origin)] if origin and s)
    _by_key[key] = plugin = Plugin(entry, module, sources)
    return plugin


def load_plugin(entry: str, spec_dir: Path) -> Plugin:
    """Import one `plugins:` entry of a spec in `spec_dir`; raise `PluginError` with the reason."""
    if entry.endswith(".py") or "/" in entry:
        return _load_file(entry, spec_dir)
    return _load_module(entry)
