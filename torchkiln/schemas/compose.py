"""`extends:`: a spec written as changes to one or more base specs, every value keeping the
file, line and column it was written at.

    name: mnist_cnn_sgd
    extends: base/mnist.yaml        # or a list, applied left to right, this file last
    stages:
      train:
        optimizer: {name: SGD, lr: 0.05}

- Paths are relative to the file; a base must be inside the repository (DVC tracks it).
  A cycle is refused with the chain of files.
- Mappings merge recursively and the later file wins; scalars and lists are replaced, not
  appended. A component block whose `name` differs from the base's replaces the whole
  block, so AdamW's `weight_decay` never leaks into SGD.
- `name`, `extends` and `abstract` belong to each file itself and are never inherited. A
  base marked `abstract: true` is not a pipeline of its own; its children validate it.
- No `${...}` interpolation: it clashes with DVC's templating and would lose positions.

The result is one `YamlDocument` whose positions name their own file and, for inherited
values, where each base was extended (`Issue.via`), so an error in a base points at the
base's line and says which `extends:` brought it in.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from torchkiln.errors import Issue, SpecError
from torchkiln.schemas.yaml_source import Loc, Position, Source, YamlDocument, load_yaml

#: Top-level keys that belong to the file they are written in.
OWN_KEYS = ("name", "extends", "abstract")


def load_spec(path: Path, display: str | None = None) -> YamlDocument:
    """Load a spec and everything it extends, merged (see the module docstring)."""
    return _load(path, display or path.as_posix(), ())


def _load(path: Path, display: str, chain: tuple[Path, ...]) -> YamlDocument:
    doc = load_yaml(path, display)
    _placed(doc)
    entries = _extends_entries(doc)
    if not entries:
        return doc
    resolved = path.resolve()
    merged: YamlDocument | None = None
    sources: list[Source] = []
    issues: list[Issue] = []
    for entry, loc in entries:
        where = doc.position(loc)
        ref = where.where(doc.file)
        try:
            target = (path.parent / entry).resolve()
            problem = _target_problem(target, entry, (*chain, resolved), doc.file)
        except (OSError, ValueError) as exc:  # a NUL byte, a name too long for the system
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            problem = f"{entry[:60]!r} is not a usable file path ({why})"
        if problem:
            issues.append(doc.issue(loc, problem))
            continue
        try:
            base = _load(target, _display(target), (*chain, resolved))
        except SpecError as exc:  # an error in a base: say which extends brought it in
            issues.extend(replace(i, via=(*i.via, ref)) for i in exc.issues)
            continue
        base = _inherited(base, ref)
        sources += base.sources
        merged = base if merged is None else merge(merged, base)
    if issues:
        raise SpecError(issues)
    assert merged is not None
    result = merge(merged, doc)
    seen: set[str] = set()
    result.sources = [
        s for s in [*doc.sources, *sources] if not (s.file in seen or seen.add(s.file))
    ]
    return result


def _extends_entries(doc: YamlDocument) -> list[tuple[str, Loc]]:
    raw = doc.data.get("extends")
    if raw is None:
        return []
    if isinstance(raw, str):
        return [(raw, ("extends",))]
    if isinstance(raw, list) and raw and all(isinstance(e, str) for e in raw):
        return [(entry, ("extends", i)) for i, entry in enumerate(raw)]
    raise SpecError(
        [doc.issue(("extends",), "must be a spec file path, or a list of them (applied in order)")]
    )


def _target_problem(target: Path, entry: str, chain: tuple[Path, ...], file: str) -> str:
    if target in chain:
        files = " -> ".join(_display(p) for p in (*chain, target))
        return f"extends forms a cycle: {files}"
    if _inside_repository(target) is None:
        return (
            f"{entry!r} is outside the repository ({target}); DVC can only track a base inside it"
        )
    if not target.is_file():
        return f"{entry!r}: no such file ({_display(target)}; paths are relative to {file})"
    return ""


def _inside_repository(path: Path) -> str | None:
    try:
        return path.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return None


def _display(path: Path) -> str:
    return _inside_repository(path) or os.path.relpath(path)


def _placed(doc: YamlDocument) -> None:
    """Give every position of a freshly loaded file its file name."""
    doc.values = {loc: replace(p, file=p.file or doc.file) for loc, p in doc.values.items()}
    doc.keys = {loc: replace(p, file=p.file or doc.file) for loc, p in doc.keys.items()}


def _inherited(base: YamlDocument, ref: str) -> YamlDocument:
    """A base as a child sees it: without its own keys, every position noting `ref`."""
    data = {k: v for k, v in base.data.items() if k not in OWN_KEYS}

    def keep(positions: dict[Loc, Position]) -> dict[Loc, Position]:
        return {
            loc: replace(p, via=(*p.via, ref))
            for loc, p in positions.items()
            if not (loc and loc[0] in OWN_KEYS)
        }

    return YamlDocument(base.file, data, keep(base.values), keep(base.keys), base.sources)


def replaces(base: Any, child: Any) -> bool:
    """Whether `child` replaces `base` whole rather than merging into it: anything but two
    mappings, or two component blocks naming different components."""
    if not (isinstance(base, dict) and isinstance(child, dict)):
        return True
    return "name" in base and "name" in child and base["name"] != child["name"]


def merge(base: YamlDocument, child: YamlDocument) -> YamlDocument:
    """`child` over `base` (see the module docstring); positions follow the values."""
    out = YamlDocument(child.file, {}, {}, {}, [*child.sources, *base.sources])

    def copy(doc: YamlDocument, loc: Loc) -> None:
        n = len(loc)
        out.values.update({k: p for k, p in doc.values.items() if k[:n] == loc})
        out.keys.update({k: p for k, p in doc.keys.items() if k[:n] == loc and len(k) > n})

    def walk(old: Any, new: Any, loc: Loc) -> Any:
        if replaces(old, new):
            copy(child, loc)
            return new
        if loc in child.values:
            out.values[loc] = child.values[loc]
        result = {}  # the base's order, then what the child adds
        for key, value in old.items():
            at = (*loc, key)
            if key in new:
                result[key] = walk(value, new[key], at)
                out.keys[at] = child.keys[at]
            else:
                copy(base, at)
                if at in base.keys:
                    out.keys[at] = base.keys[at]
                result[key] = value
        for key, value in new.items():
            if key not in old:
                copy(child, (*loc, key))
                out.keys[(*loc, key)] = child.keys[(*loc, key)]
                result[key] = value
        return result

    out.data = walk(base.data, child.data, ())
    return out
