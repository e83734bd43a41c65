"""Safe YAML loading that remembers where every key and value came from.

Why not `yaml.safe_load`: it forgets positions, silently keeps the last of two
duplicate keys, expands alias bombs until memory runs out, and resolves scalars
by YAML 1.1 rules (`yes` is a bool, `1e-3` a string). We compose nodes with
PyYAML's safe machinery and build plain Python values ourselves, refusing every
tag outside the core schema, so no Python object can ever be constructed.

Scalars follow the YAML 1.2 core schema, as DVC (ruamel) reads the same file:
`1e-3` is a float, `yes`/`on` are strings, `010` is the integer 10.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

from torchkiln.errors import Issue, SpecError, UsageError

Loc = tuple[str | int, ...]

MAX_BYTES = 4 * 1024 * 1024
MAX_NODES = 100_000
MAX_DEPTH = 100

_CORE = "tag:yaml.org,2002:"
_NULL, _BOOL, _INT, _FLOAT, _STR = (_CORE + t for t in ("null", "bool", "int", "float", "str"))
_SEQ, _MAP, _MERGE = _CORE + "seq", _CORE + "map", _CORE + "merge"


class _CoreResolver(BaseResolver):
    """YAML 1.2 core-schema resolution of plain scalars."""

    yaml_implicit_resolvers: dict = {}


for _tag, _pattern, _first in (
    (_NULL, r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    (_BOOL, r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
    (_INT, r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", list("-+0123456789")),
    (
        _FLOAT,
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        list("-+0123456789."),
    ),
    (_MERGE, r"^(?:<<)$", ["<"]),
):
    _CoreResolver.add_implicit_resolver(_tag, re.compile(_pattern), _first)


class _Composer(Reader, Scanner, Parser, Composer, _CoreResolver):
    def __init__(self, text: str) -> None:
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        _CoreResolver.__init__(self)
        self.depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        # PyYAML composes recursively: stop at the depth limit, where the node starts,
        # rather than at Python's recursion limit with no position
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH + 1 and self.check_event(
                yaml.MappingStartEvent, yaml.SequenceStartEvent
            ):  # a key is composed a level below its mapping: only collections count
                raise _TooDeep(self.peek_event())
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


@dataclass(frozen=True)
class Position:
    line: int
    col: int
    #: the file it is in (None: the document's own file)
    file: str | None = None
    #: through which `extends:` entries it reached the document (`child.yaml:2:10`)
    via: tuple[str, ...] = ()

    def where(self, default_file: str) -> str:
        return f"{self.file or default_file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Source:
    """One file a spec is made of (itself, or a base it extends), as written."""

    file: str
    data: dict[str, Any]


@dataclass
class YamlDocument:
    """Loaded data plus the position of every value and every mapping key, by path."""

    file: str
    data: dict[str, Any]
    values: dict[Loc, Position] = field(default_factory=dict)
    keys: dict[Loc, Position] = field(default_factory=dict)
    #: the files the data comes from: the spec itself first, then what it extends
    sources: list[Source] = field(default_factory=list)

    def position(self, loc: Loc, *, key: bool = False) -> Position:
        """Where `loc` is written. A path that does not exist is placed at its nearest
        existing parent: the value itself when it is a string (a field of a shorthand such
        as `optimizer: Adamw`), else a mapping entry's key (a missing key) or a list item's
        value."""
        loc = tuple(loc)
        if key and loc in self.keys:
            return self.keys[loc]
        if loc in self.values:
            return self.values[loc]
        while loc:
            loc = loc[:-1]
            if loc in self.values and isinstance(self._value_at(loc), str):
                return self.values[loc]
            if loc and isinstance(loc[-1], int) and loc in self.values:
                return self.values[loc]
            if loc in self.keys:
                return self.keys[loc]
        return self.values.get((), Position(1, 1))

    def _value_at(self, loc: Loc) -> Any:
        value: Any = self.data
        try:
            for part in loc:
                value = value[part]
        except (KeyError, IndexError, TypeError):
            return None
        return value

    def issue(self, loc: Loc, message: str, *, key: bool = False) -> Issue:
        pos = self.position(loc, key=key)
        return Issue(pos.file or self.file, pos.line, pos.col, dotted(loc), message, pos.via)

    def written(self, loc: Loc) -> Position | None:
        """Where the value at `loc` was written, or None for a default. A field of a
        component given by name alone (`optimizer: SGD`) was written only as `name`."""
        loc = tuple(loc)
        if loc in self.values:
            return self.values[loc]
        if loc and loc[-1] == "name" and isinstance(self._value_at(loc[:-1]), str):
            return self.values.get(loc[:-1])
        return None


def dotted(loc: Loc) -> str:
    """`("stages", "train", "metrics", 0)` -> `stages.train.metrics[0]`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _pos(node: Node | yaml.Event) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    """Turns a composed node tree into plain dict/list/scalars, recording positions."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.doc = YamlDocument(file, {})
        self.issues: list[Issue] = []
        self.count = 0

    def fail(self, node: Node, message: str) -> None:
        p = _pos(node)
        self.issues.append(Issue(self.file, p.line, p.col, "", message))

    def build(self, node: Node, loc: Loc, depth: int = 0) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise _TooBig(node)
        if depth > MAX_DEPTH:
            raise _TooDeep(node)
        self.doc.values[loc] = _pos(node)
        if isinstance(node, ScalarNode):
            return self.scalar(node)
        if isinstance(node, SequenceNode):
            if node.tag != _SEQ:
                self.fail(node, f"tag {node.tag!r} is not allowed; only plain YAML values are")
                return None
            return [self.build(item, (*loc, i), depth + 1) for i, item in enumerate(node.value)]
        if isinstance(node, MappingNode):
            if node.tag != _MAP:
                self.fail(node, f"tag {node.tag!r} is not allowed; only plain YAML values are")
                return None
            return self.mapping(node, loc, depth)
        raise AssertionError(f"unexpected node {node!r}")  # pragma: no cover

    def scalar(self, node: ScalarNode) -> Any:
        tag, text = node.tag, node.value
        try:
            if tag == _STR:
                return text
            if tag == _NULL:
                return None
            if tag == _BOOL:
                return text.lower() == "true"
            if tag == _INT:
                if text[:2] in ("0o", "0x"):
                    return int(text, 0)
                return int(text.replace("_", ""), 10)
            if tag == _FLOAT:
                lowered = text.lower()
                if lowered.endswith(".inf"):
                    return -math.inf if lowered.startswith("-") else math.inf
                if lowered == ".nan":
                    return math.nan
                return float(text)
        except ValueError:
            self.fail(node, f"{text!r} is not a valid {tag.rsplit(':', 1)[-1]}")
            return None
        self.fail(node, f"tag {tag!r} is not allowed; only plain YAML values are")
        return None

    def mapping(self, node: MappingNode, loc: Loc, depth: int) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        seen: dict[Any, Position] = {}
        merges: list[Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                merges.append(value_node)
                continue
            if not isinstance(key_node, ScalarNode):
                self.fail(key_node, "mapping keys must be plain scalars")
                continue
            key = self.scalar(key_node)
            if key in seen:
                first = seen[key]
                self.fail(
                    key_node,
                    f"duplicate key {key!r} (first defined at line {first.line}); "
                    "YAML would silently keep only the last one",
                )
                continue
            seen[key] = _pos(key_node)
            self.doc.keys[(*loc, key)] = seen[key]
            out[key] = self.build(value_node, (*loc, key), depth + 1)
        for merge in merges:
            sources = merge.value if isinstance(merge, SequenceNode) else [merge]
            for source in sources:
                if not isinstance(source, MappingNode):
                    self.fail(source, "a merge key '<<' needs a mapping or a list of mappings")
                    continue
                for key_node, value_node in source.value:
                    if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE:
                        continue
                    key = self.scalar(key_node)
                    if key in out:
                        continue  # explicit keys and earlier merge sources win
                    self.doc.keys[(*loc, key)] = _pos(key_node)
                    out[key] = self.build(value_node, (*loc, key), depth + 1)
        return out


class _TooBig(Exception):
    def __init__(self, node: Node | yaml.Event) -> None:
        self.node = node


class _TooDeep(_TooBig):
    pass


def _decode(raw: bytes, file: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        bad = raw[exc.start : exc.start + 1].hex()
        raise SpecError(
            [Issue(file, line, col, "", f"the file is not valid UTF-8 (byte 0x{bad})")]
        ) from exc


def _yaml_error(exc: yaml.MarkedYAMLError, file: str) -> SpecError:
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    problem = exc.problem or "invalid YAML"
    if "'\\t'" in problem or "\t" in problem:
        problem = "a tab character here; YAML indents with spaces only"
    elif exc.context:
        problem = f"{problem} ({exc.context})"
    if "expected a single document" in (exc.context or ""):
        problem = "the file holds more than one YAML document; a spec is a single document"
    return SpecError([Issue(file, line, col, "", f"invalid YAML: {problem}")])


def _too_deep(exc: _TooDeep, file: str) -> SpecError:
    p = _pos(exc.node)
    msg = f"the document nests deeper than {MAX_DEPTH} levels"
    return SpecError([Issue(file, p.line, p.col, "", msg)])


def load_yaml_text(text: str, file: str) -> YamlDocument:
    """Parse `text` (named `file` in messages) into a positioned document with a mapping root."""
    try:
        root = _Composer(text).get_single_node()
    except _TooDeep as exc:
        raise _too_deep(exc, file) from None
    except yaml.MarkedYAMLError as exc:
        raise _yaml_error(exc, file) from exc
    except yaml.YAMLError as exc:  # reader errors: control characters and the like
        raise SpecError([Issue(file, 1, 1, "", f"invalid YAML: {exc}")]) from exc
    except RecursionError as exc:
        raise SpecError([Issue(file, 1, 1, "", "invalid YAML: nesting is too deep")]) from exc
    if root is None:
        raise SpecError(
            [Issue(file, 1, 1, "", "the spec is empty; expected a mapping with 'stages'")]
        )
    builder = _Builder(file)
    try:
        data = builder.build(root, ())
    except _TooDeep as exc:
        raise _too_deep(exc, file) from None
    except _TooBig as exc:
        p = _pos(exc.node)
        msg = (
            f"the document expands to more than {MAX_NODES} values through aliases; "
            "refusing to load it (an alias bomb?)"
        )
        raise SpecError([Issue(file, p.line, p.col, "", msg)]) from exc
    if builder.issues:
        raise SpecError(builder.issues)
    if not isinstance(data, dict):
        tname = type(data).__name__
        kind = "a list" if isinstance(data, list) else f"a{'n' * (tname[0] in 'aeiou')} {tname}"
        raise SpecError(
            [Issue(file, 1, 1, "", f"the top level must be a mapping with 'stages' (got {kind})")]
        )
    builder.doc.data = data
    builder.doc.sources = [Source(file, data)]
    return builder.doc


def read_spec_text(path: Path, display: str | None = None) -> str:
    """Read a spec file as text, turning every way it can be unreadable into a clear error."""
    name = display or path.as_posix()
    if not path.exists():
        raise UsageError(f"{name}: no such file")
    if path.is_dir():
        raise UsageError(f"{name}: is a directory; give a .yaml spec file")
    try:
        size = path.stat().st_size
        raw = b"" if size > MAX_BYTES else path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{name}: cannot read: {exc.strerror}") from exc
    if size > MAX_BYTES:  # refused unread: a spec is a page or two, not megabytes
        message = f"the file is {size:,} bytes, more than the {MAX_BYTES:,} a spec may have"
        raise SpecError([Issue(name, 1, 1, "", message)])
    return _decode(raw, name)


def load_yaml(path: Path, display: str | None = None) -> YamlDocument:
    """Load a spec file (see module docstring)."""
    name = display or path.as_posix()
    return load_yaml_text(read_spec_text(path, name), name)
