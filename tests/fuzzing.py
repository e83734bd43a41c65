"""The fuzzing harness shared by the CI-sized fuzz tests (tests/test_fuzz_specs.py,
tests/test_fuzz_data.py) and the long runs of `benchmarks/fuzz.py`.

A *target* is a hypothesis strategy of cases plus a check that runs one case through the
product's own code paths, in process, and asserts that the outcome is one the product
allows. Each case runs under `bounded()`:

- time: at most `CASE_CPU_SECONDS` of CPU time (robust on a shared machine, where wall time
  is not), and a hang is stopped after `CASE_WALL_SECONDS` of wall time;
- memory: the process's peak RSS may grow by at most `CASE_MEMORY_BYTES` during one case,
  and the data segment (heap and anonymous mappings) is capped at the usage before the case
  plus `CASE_HARD_MEMORY_BYTES`, so an unbounded allocation fails fast (and is reported)
  instead of taking the machine down.

Anything else (another exception, a message without its position, a slow or hungry case)
raises `CaseFailure`, which hypothesis shrinks to a minimal reproducer.

Import it from here (like cli_tools), never from a conftest.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import io
import json
import math
import os
import random
import re
import resource
import signal
import struct
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "pipelines").glob("*.yaml"))

# Even without an example database (`database=None` below), hypothesis caches the Unicode
# tables and the constants it finds in the code under test: keep them out of the working
# tree, in the temporary folder.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "torchkiln-hypothesis")

CASE_CPU_SECONDS = 2.0
CASE_WALL_SECONDS = 30.0
CASE_MEMORY_BYTES = 512 * 1024 * 1024
CASE_HARD_MEMORY_BYTES = 2 * 1024 * 1024 * 1024


class CaseFailure(AssertionError):
    """A case ended in an outcome the product does not allow."""


class _Hang(BaseException):
    """Raised by the wall-clock alarm; a BaseException, so `except Exception` in the code
    under test cannot swallow it."""


def _on_alarm(signum: int, frame: object) -> None:
    raise _Hang


def _vm_data() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@contextlib.contextmanager
def bounded(what: str = "case") -> Iterator[None]:
    """Run the body within the time and memory bounds of one case (see the module doc)."""
    old_limit = resource.getrlimit(resource.RLIMIT_DATA)
    used = _vm_data()
    if used is not None:
        cap = used + CASE_HARD_MEMORY_BYTES
        if old_limit[1] == resource.RLIM_INFINITY or cap <= old_limit[1]:
            resource.setrlimit(resource.RLIMIT_DATA, (cap, old_limit[1]))
    old_handler = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, CASE_WALL_SECONDS)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # what lived before the case (hypothesis' own records grow with every case) is left
    # out of the garbage collector's passes during it: a full pass over them is not the
    # case's time
    gc.freeze()
    cpu = time.process_time()
    try:
        yield
    except _Hang:
        raise CaseFailure(
            f"{what}: still running after {CASE_WALL_SECONDS:.0f} s (a hang)"
        ) from None
    except MemoryError:
        raise CaseFailure(
            f"{what}: MemoryError past the {CASE_HARD_MEMORY_BYTES >> 20} MiB bound"
        ) from None
    finally:
        spent = time.process_time() - cpu
        gc.unfreeze()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        resource.setrlimit(resource.RLIMIT_DATA, old_limit)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - peak
    if spent > CASE_CPU_SECONDS:
        raise CaseFailure(f"{what}: took {spent:.2f} s of CPU (bound {CASE_CPU_SECONDS} s)")
    if grown > CASE_MEMORY_BYTES:
        raise CaseFailure(f"{what}: peak memory grew by {grown >> 20} MiB")


@contextlib.contextmanager
def working_directory(path: Path) -> Iterator[None]:
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def no_python_repr(message: str, what: str) -> None:
    """A user-facing message never shows a Python object's repr or a traceback."""
    for leak in (" object at 0x", "Traceback (most recent call last)", "<class '", "<function "):
        if leak in message:
            raise CaseFailure(f"{what}: the message leaks Python internals: {message[:500]}")


def unexpected(what: str, exc: BaseException) -> CaseFailure:
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return CaseFailure(f"{what}: {type(exc).__name__}: {str(exc)[:300]}{where}")


# --- specs ------------------------------------------------------------------------------------


def load_examples() -> list[tuple[str, str, Any]]:
    """(file name, text, data) of every shipped example spec."""
    from torchkiln.schemas.yaml_source import load_yaml_text

    out = []
    for path in EXAMPLES:
        text = path.read_text(encoding="utf-8")
        out.append((path.name, text, load_yaml_text(text, path.name).data))
    return out


def _collect(value: Any, keys: set[str], strings: set[str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            keys.add(str(k))
            _collect(v, keys, strings)
    elif isinstance(value, list):
        for v in value:
            _collect(v, keys, strings)
    elif isinstance(value, str):
        strings.add(value)


@dataclass(frozen=True)
class SpecPools:
    examples: tuple[tuple[str, str, Any], ...]
    keys: tuple[str, ...]
    strings: tuple[str, ...]


_POOLS: SpecPools | None = None


def spec_pools() -> SpecPools:
    """The examples, and every key and string they use plus every registered name: mutations
    draw from these, so they reach deep into validation instead of stopping at the top."""
    global _POOLS
    if _POOLS is None:
        from torchkiln.packs import load_builtins
        from torchkiln.registry.registry import ALL_REGISTRIES
        from torchkiln.schemas.spec import TOP_LEVEL_KEYS

        load_builtins()
        examples = load_examples()
        keys: set[str] = set(TOP_LEVEL_KEYS) | {"uses", "inputs", "name"}
        strings: set[str] = set()
        for _, _, data in examples:
            _collect(data, keys, strings)
        for registry in ALL_REGISTRIES.values():
            strings.update(registry.names())
        _POOLS = SpecPools(tuple(examples), tuple(sorted(keys)), tuple(sorted(strings)))
    return _POOLS


ODD_STRINGS = (
    "",
    " ",
    "\t",
    "~",
    "null",
    "yes",
    "0x1F",
    "1e400",
    "-.inf",
    ".nan",
    "../../../../etc/passwd",
    "/abs/path",
    "C:\\windows",
    "a b; touch INJECTED",
    "$(touch INJECTED)",
    "`id`",
    "'\"",
    "%s%n",
    "{{x}}",
    "${x}",
    "é\u0301",
    "\u202eevil",
    "日本語",
    "🔥" * 3,
    "\u2028\u2029",
    "a\x85b",
    "a\x00b",
    "NUL\x00",
    "x" * 1000,
    "pipelines/mnist_cnn.yaml",
    "digits_mlp.yaml",
    "torchvision/resnet18",
    "my_project.models",
    "plugin.py",
)

ODD_NUMBERS: tuple[Any, ...] = (
    0,
    -1,
    1,
    2,
    2**31,
    2**32 - 1,
    2**32,
    2**63 - 1,
    2**63,
    -(2**63) - 1,
    10**100,
    -(10**100),
    0.0,
    -0.0,
    1e-300,
    5e-324,
    1.7976931348623157e308,
    -1e308,
    math.inf,
    -math.inf,
    math.nan,
    0.5,
    1.0,
    1e-3,
    True,
    False,
    None,
)


_CACHE: dict[str, Any] = {}


def _cached(make: Callable[[], Any]) -> Callable[[], Any]:
    """Build a strategy once (hypothesis validates a new one on every draw)."""

    def get() -> Any:
        if make.__name__ not in _CACHE:
            _CACHE[make.__name__] = make()
        return _CACHE[make.__name__]

    get.__name__ = make.__name__
    return get


@_cached
def scalars() -> st.SearchStrategy[Any]:
    pools = spec_pools()
    return st.one_of(
        st.sampled_from(ODD_NUMBERS),
        st.sampled_from(ODD_STRINGS),
        st.sampled_from(pools.strings),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=20),
        st.booleans(),
        st.none(),
    )


@_cached
def keys_strategy() -> st.SearchStrategy[Any]:
    pools = spec_pools()
    return st.one_of(
        st.sampled_from(pools.keys),
        st.sampled_from(pools.keys).map(lambda k: k.upper()),
        st.sampled_from(pools.keys).map(lambda k: k.replace("_", "-")),
        st.sampled_from(pools.keys).map(lambda k: k[:-1] or "x"),
        st.sampled_from(pools.keys).map(lambda k: k + "s"),
        st.text(max_size=12),
        st.sampled_from((0, 1, -1, 2.5, True, False, None, "", " ", "a.b", "a-b", "0abc")),
    )


@_cached
def values() -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars(),
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(keys_strategy(), children, max_size=4),
        ),
        max_leaves=12,
    )


@st.composite
def deep_value(draw: st.DrawFn) -> Any:
    depth = draw(st.sampled_from((10, 50, 98, 99, 100, 101, 150, 400)))
    leaf: Any = draw(scalars())
    as_list = draw(st.booleans())
    for _ in range(depth):
        leaf = [leaf] if as_list else {"a": leaf}
    return leaf


@st.composite
def long_string(draw: st.DrawFn) -> str:
    size = draw(st.sampled_from((255, 256, 4096, 20_000)))
    char = draw(st.sampled_from(("x", "é", "日", "🔥", " ", "\\")))
    return char * (size // len(char.encode()))


def _paths(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path in the tree, down to a depth: past it (inside a deep value a mutation
    wrote) there is nothing new to mutate, and Python's recursion limit is near."""
    out = [at]
    if len(at) >= 120:
        return out
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*at, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*at, i))
    return out


def _unshared(tree: Any) -> Any:
    """A copy with no node in two places: a `share` mutation (an alias) followed by an
    edit of one place could otherwise put a node inside itself."""
    if isinstance(tree, dict):
        return {k: _unshared(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_unshared(v) for v in tree]
    return tree


def _get(tree: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        tree = tree[part]
    return tree


def _containers(tree: Any, kind: type) -> list[tuple[Any, ...]]:
    return [p for p in _paths(tree) if isinstance(_get(tree, p), kind)]


@st.composite
def mutate_tree(draw: st.DrawFn, tree: Any) -> tuple[Any, str]:
    """One structural mutation anywhere in the tree; returns (tree, what was done)."""
    tree = _unshared(tree)
    op = draw(
        st.sampled_from(
            (
                "delete",
                "rename",
                "retype",
                "retype",
                "move",
                "duplicate",
                "wrap",
                "deep",
                "long",
                "add",
                "share",
            )
        )
    )
    maps = _containers(tree, dict)
    items = [(p, k) for p in maps for k in _get(tree, p)]
    nodes = [p for p in _paths(tree) if p]
    if op in ("delete", "rename", "move", "duplicate") and items:
        path, key = draw(st.sampled_from(items))
        parent = _get(tree, path)
        if op == "delete":
            del parent[key]
        elif op == "rename":
            new = draw(keys_strategy())
            parent[new] = parent.pop(key)
        elif op == "duplicate":
            parent[draw(keys_strategy())] = copy.deepcopy(parent[key])
        else:
            value = parent.pop(key)
            targets = _containers(tree, dict)
            target = _get(tree, draw(st.sampled_from(targets)))
            target[draw(st.one_of(st.just(key), keys_strategy()))] = value
        return tree, f"{op} {'.'.join(map(str, (*path, key)))}"
    if op == "share" and len(nodes) >= 2:
        # the same object twice: yaml.dump writes an anchor and an alias
        a, b = draw(st.sampled_from(nodes)), draw(st.sampled_from(nodes))
        if a[: len(b)] != b and b[: len(a)] != a:
            _get(tree, b[:-1])[b[-1]] = _get(tree, a)
        return tree, f"share {a} at {b}"
    if op == "add" and maps:
        target = _get(tree, draw(st.sampled_from(maps)))
        target[draw(keys_strategy())] = draw(values())
        return tree, "add"
    if not nodes:
        return draw(values()), "replace root"
    path = draw(st.sampled_from(nodes))
    parent, key = _get(tree, path[:-1]), path[-1]
    if op == "wrap":
        how = draw(st.sampled_from(("list", "name", "dict")))
        old = parent[key]
        parent[key] = [old] if how == "list" else {"name": old} if how == "name" else {"x": old}
    elif op == "deep":
        parent[key] = draw(deep_value())
    elif op == "long":
        parent[key] = draw(long_string())
    else:
        parent[key] = draw(values())
    return tree, f"{op} {'.'.join(map(str, path))}"


TAGS = (
    "!!python/object/apply:os.system ['touch INJECTED']",
    "!!python/name:os.system",
    "!custom",
    "!!binary",
    "!!set",
    "!!omap",
    "!!timestamp",
    "!!str",
    "!!int",
    "!!float",
    "!!bool",
    "!!null",
    "!!map",
    "!!seq",
    "!<tag:yaml.org,2002:str>",
    "!<tag:example.com,2000:x>",
)

BOMB = "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else ', '.join(['x'] * 9)}]\n"
    for i in range(9)
)


@st.composite
def mutate_text(draw: st.DrawFn, text: str) -> tuple[str, str]:
    """One textual mutation: what a tree cannot express (tags, anchors, duplicates...)."""
    lines = text.split("\n")
    op = draw(
        st.sampled_from(
            (
                "truncate",
                "dup-line",
                "del-line",
                "indent",
                "tab",
                "tag",
                "anchor",
                "alias",
                "merge",
                "recursive",
                "documents",
                "flow",
                "unicode-line",
                "crlf",
                "comment",
            )
        )
    )
    i = draw(st.integers(0, max(len(lines) - 1, 0)))
    line = lines[i] if lines else ""
    if op == "truncate":
        return text[: draw(st.integers(0, len(text)))], op
    if op == "dup-line":
        lines.insert(i, line)
    elif op == "del-line":
        del lines[i]
    elif op == "indent":
        lines[i] = " " * draw(st.integers(1, 5)) + line
    elif op == "tab":
        lines[i] = "\t" + line
    elif op in ("tag", "anchor", "alias", "recursive") and ":" in line:
        head, _, tail = line.partition(":")
        extra = {
            "tag": draw(st.sampled_from(TAGS)),
            "anchor": "&a",
            "alias": "*a",
            "recursive": "&r [*r]",
        }[op]
        tail = "" if op in ("alias", "recursive") else tail
        lines[i] = f"{head}: {extra}{tail}"
    elif op == "merge":
        indent = len(line) - len(line.lstrip(" "))
        lines.insert(i, " " * indent + draw(st.sampled_from(("<<: *a", "<<: [*a, *a]", "<<: 1"))))
    elif op == "documents":
        return text + "\n---\n" + text, op
    elif op == "flow":
        lines[i] = line + draw(st.sampled_from(("{", "[", "]", "}", ",", "'", '"', " #", ": x")))
    elif op == "unicode-line":
        lines[i] = draw(st.text(max_size=40))
    elif op == "crlf":
        return text.replace("\n", "\r\n"), op
    else:
        lines[i] = line + " # " + draw(st.text(max_size=20))
    return "\n".join(lines), op


@st.composite
def mutate_bytes(draw: st.DrawFn, raw: bytes) -> tuple[bytes, str]:
    op = draw(st.sampled_from(("flip", "insert", "bom", "latin1", "nul", "cut-utf8")))
    if not raw:
        return draw(st.binary(max_size=64)), "random"
    i = draw(st.integers(0, len(raw) - 1))
    if op == "flip":
        return raw[:i] + bytes([raw[i] ^ (1 << draw(st.integers(0, 7)))]) + raw[i + 1 :], op
    if op == "insert":
        return raw[:i] + draw(st.binary(min_size=1, max_size=8)) + raw[i:], op
    if op == "bom":
        return b"\xef\xbb\xbf" + raw, op
    if op == "latin1":
        return raw[:i] + "é".encode("latin-1") + raw[i:], op
    if op == "nul":
        return raw[:i] + b"\x00" + raw[i:], op
    return raw + "日".encode()[:2], op


#: libyaml's dumper when there is one (ten times faster; the product's loader is pure Python)
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def dump(data: Any, flow: bool, width: int) -> str:
    try:
        return yaml.dump(
            data,
            Dumper=_DUMPER,
            sort_keys=False,
            allow_unicode=True,
            default_flow_style=flow,
            width=width,
        )
    except RecursionError:
        return "x: 1\n"
    except yaml.representer.RepresenterError:
        return "x: 1\n"


@dataclass(frozen=True)
class SpecCase:
    base: str
    steps: tuple[str, ...]
    raw: bytes

    def __repr__(self) -> str:  # what hypothesis prints for a falsifying example
        return f"SpecCase(base={self.base!r}, steps={self.steps!r}, raw={self.raw[:600]!r})"


@st.composite
def spec_cases(draw: st.DrawFn) -> SpecCase:
    """A shipped example with structural, textual and byte-level mutations, or random bytes."""
    pools = spec_pools()
    special = draw(st.integers(0, 199))
    if special <= 9:
        return SpecCase("random", ("random bytes",), draw(st.binary(max_size=512)))
    name, text, data = draw(st.sampled_from(pools.examples))
    if special == 10:  # over the size limit: refused before it is read
        from torchkiln.schemas.yaml_source import MAX_BYTES

        padding = b"#" * (MAX_BYTES + 1 - len(text.encode()) + draw(st.integers(0, 2)))
        return SpecCase(name, ("oversize",), text.encode() + padding)
    if special == 11:  # an alias bomb (a billion laughs): refused at MAX_NODES values
        return SpecCase(name, ("alias bomb",), (BOMB + text).encode())
    steps: list[str] = []
    tree = copy.deepcopy(data)
    for _ in range(draw(st.integers(0, 4))):
        tree, what = draw(mutate_tree(tree))
        steps.append(what)
    if steps:
        text = dump(
            tree, draw(st.sampled_from((False, None, True))), draw(st.sampled_from((80, 1000)))
        )
    for _ in range(draw(st.sampled_from((0, 0, 1, 1, 2, 3)))):
        text, what = draw(mutate_text(text))
        steps.append(what)
    raw = text.encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 5)) == 0:
        raw, what = draw(mutate_bytes(raw))
        steps.append(what)
    return SpecCase(name, tuple(steps), raw)


class SpecWorkspace:
    """A temporary repository with the examples in pipelines/ (so `extends:` and
    cross-pipeline references resolve); each case is written as pipelines/<base name>."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "pipelines").mkdir(parents=True, exist_ok=True)
        for path in EXAMPLES:
            (root / "pipelines" / path.name).write_bytes(path.read_bytes())

    def write(self, case: SpecCase, name: str = "fuzz_case.yaml") -> Path:
        target = self.root / "pipelines" / name
        target.write_bytes(case.raw)
        return Path("pipelines") / name


def _check_issue(issue: Any, spec: str, raw: bytes, what: str) -> None:
    text = str(issue)
    no_python_repr(text, what)
    if not re.match(r"^[^:\n]+:\d+:\d+: ", text):
        raise CaseFailure(f"{what}: an issue without file:line:col: {text[:300]}")
    if issue.line < 1 or issue.col < 1 or not issue.message:
        raise CaseFailure(f"{what}: a bad position or empty message: {text[:300]}")
    # YAML breaks lines at \r, \n, \r\n, NEL and the Unicode separators: splitlines counts
    # those (and a few more), so it bounds the lines an editor shows
    lines = len(raw.decode("utf-8", "replace").splitlines())
    if issue.file == spec and issue.line > lines + 1:
        raise CaseFailure(f"{what}: line {issue.line} is past the end of the file: {text[:300]}")


@contextlib.contextmanager
def no_module_plugins() -> Iterator[None]:
    """Mutations may name any string as a plugin module. Importing an installed module
    named by chance could have side effects (`antigravity` opens a browser), so module
    plugins that exist are refused here as if they failed to import; a name that does not
    exist still goes through the product's own not-found path."""
    import importlib.util

    from torchkiln.registry import plugins

    original = plugins._load_module

    def guarded(entry: str) -> Any:
        top = entry.split(".")[0]
        try:
            found = top.isidentifier() and importlib.util.find_spec(top) is not None
        except (ImportError, ValueError):
            found = False
        if found:
            raise plugins.PluginError(f"fuzzing: module plugin {entry!r} not imported")
        return original(entry)

    plugins._load_module = guarded  # type: ignore[assignment]
    try:
        yield
    finally:
        plugins._load_module = original  # type: ignore[assignment]


def check_spec(case: SpecCase, workspace: SpecWorkspace) -> str:
    """Run one spec through what `kiln validate`, `kiln show`, `kiln dvc` and `kiln list`
    do, each command within its own bounds; return the outcome ("valid", "invalid",
    "abstract"). Of `kiln list`, only loading the spec's plugins depends on the spec (the
    listing itself is the registries'); tests/test_fuzz_specs.py runs the real commands
    on hostile specs."""
    from torchkiln.commands.show import lines as show_lines
    from torchkiln.dvc import dvc_yaml_text
    from torchkiln.errors import SpecError, UsageError
    from torchkiln.project import load_plugins_of, load_project
    from torchkiln.schemas.spec import load_pipeline
    from torchkiln.schemas.view import leaves, resolved

    what = f"spec {case.base} after {list(case.steps)}"
    spec = workspace.write(case)
    name = spec.as_posix()
    with working_directory(workspace.root), no_module_plugins():
        with bounded(f"kiln validate: {what}"), unexpected_is_failure(what):
            abstract: list[Path] = []
            pipelines, issues = load_project([spec], collect=True, abstract=abstract)
            for issue in issues:
                _check_issue(issue, name, case.raw, what)
        with bounded(f"kiln show: {what}"), unexpected_is_failure(what):
            try:
                pipeline = load_pipeline(spec)
            except SpecError as exc:
                if not issues:
                    raise CaseFailure(f"{what}: show refused a spec validate accepted") from exc
                for issue in exc.issues:
                    _check_issue(issue, name, case.raw, what)
            except UsageError as exc:
                message = str(exc)
                no_python_repr(message, what)
                if name not in message:
                    raise CaseFailure(
                        f"{what}: a usage error not naming the file: {message}"
                    ) from exc
                if not abstract and not issues:
                    raise CaseFailure(
                        f"{what}: show refused ({message}) what validate accepted"
                    ) from exc
            else:
                if issues or abstract:
                    raise CaseFailure(f"{what}: show accepted a spec validate refused")
                view = resolved(pipeline)
                show_lines(view, pipeline.doc)
                json.dumps({"spec": view, "values": leaves(view, pipeline.doc)})
        if pipelines:
            with bounded(f"kiln dvc: {what}"), unexpected_is_failure(what):
                new = dvc_yaml_text(pipelines, workspace.root / "dvc.yaml")[1]
                if new != dvc_yaml_text(pipelines, workspace.root / "dvc.yaml")[1]:
                    raise CaseFailure(f"{what}: dvc.yaml is not deterministic")
                compiled = yaml.safe_load(new)
                if not isinstance(compiled, dict) or not compiled.get("stages"):
                    raise CaseFailure(f"{what}: dvc.yaml has no stages: {new[:300]}")
        with bounded(f"kiln list: {what}"), unexpected_is_failure(what):
            load_plugins_of([spec])  # the spec's plugins, best effort
    if pipelines:
        return "valid"
    if abstract:
        return "abstract"
    return "invalid"


@contextlib.contextmanager
def unexpected_is_failure(what: str) -> Iterator[None]:
    """Any exception but a `CaseFailure` (the product's own errors are caught inside) is one."""
    try:
        yield
    except CaseFailure:
        raise
    except Exception as exc:
        raise unexpected(what, exc) from exc


# --- data readers -----------------------------------------------------------------------------


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height grayscale pixels, with a tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def gif_bomb(width: int, height: int) -> bytes:
    header = b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00"
    image = b"\x2c" + struct.pack("<HHHH", 0, 0, width, height) + b"\x00\x02\x02\x44\x01\x00\x3b"
    return header + image


def bmp_bomb(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54 + 16, 0, 0, 54) + info + b"\x00" * 16


def image_bytes(rng: random.Random, kind: str) -> bytes:
    """One image file of the given kind (a valid image of a random mode, size and format,
    a broken one, or a bomb)."""
    from PIL import Image

    if kind == "empty":
        return b""
    if kind == "random":
        return rng.randbytes(rng.choice((1, 8, 64, 512)))
    if kind == "bomb":
        side = rng.choice((9000, 20_000, 65_535))
        return rng.choice((png_bomb, gif_bomb, bmp_bomb))(side, side)
    mode = rng.choice(("L", "RGB", "RGBA", "P", "1", "I;16", "LA", "CMYK", "I", "F"))
    size = (rng.choice((1, 2, 5, 8, 13)), rng.choice((1, 3, 8, 9)))
    image = Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3)).convert(mode)
    fmt = rng.choice(("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP"))
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=fmt)
    except (OSError, ValueError, KeyError):
        image.convert("RGB").save(buffer, format="PNG")
    data = buffer.getvalue()
    if kind == "truncated":
        return data[: rng.randrange(max(len(data), 1))]
    if kind == "corrupt" and data:
        i = rng.randrange(len(data))
        return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]
    return data


IMAGE_KINDS = ("valid",) * 12 + ("truncated", "corrupt", "random", "empty", "bomb")
SUFFIXES = (".png",) * 8 + (".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".PNG", ".txt", "")


@dataclass(frozen=True)
class FolderCase:
    seed: int
    classes: int
    files: int
    links: tuple[str, ...]
    channels: int | None
    image_size: Any
    skip_corrupt: bool
    split: tuple[float, float, bool]


@st.composite
def folder_cases(draw: st.DrawFn) -> FolderCase:
    return FolderCase(
        seed=draw(st.integers(0, 2**32 - 1)),
        classes=draw(st.sampled_from((0, 1, 2, 2, 2, 3, 3))),
        files=draw(st.sampled_from((0, 1, 2, 3, 3, 4, 4))),
        links=tuple(
            draw(
                st.lists(
                    st.sampled_from(
                        ("outside-file", "outside-dir", "dangling", "loop", "self", "fifo")
                    ),
                    max_size=2,
                )
            )
        ),
        channels=draw(st.sampled_from((None, 1, 3))),
        image_size=draw(st.sampled_from((None, 4, 4, 8, [5, 3]))),
        skip_corrupt=draw(st.booleans()),
        split=(
            draw(st.sampled_from((0.0, 0.1, 0.34, 0.5))),
            draw(st.sampled_from((0.0, 0.2, 0.49))),
            draw(st.booleans()),
        ),
    )


def make_image_folder(case: FolderCase, root: Path) -> list[Path]:
    """The folder of a case under `root/data`; returns every file path it holds."""
    import shutil

    rng = random.Random(case.seed)
    data = root / "data"
    if data.exists() or data.is_symlink():
        shutil.rmtree(data, ignore_errors=True)
    outside = root / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "photo.png").write_bytes(image_bytes(rng, "valid"))
    data.mkdir()
    files: list[Path] = []
    for c in range(case.classes):
        folder = data / f"class_{c}"
        folder.mkdir()
        for f in range(case.files):
            path = folder / f"img_{f}{rng.choice(SUFFIXES)}"
            if rng.random() < 0.1:
                path = folder / "nested" / path.name
                path.parent.mkdir(exist_ok=True)
            path.write_bytes(image_bytes(rng, rng.choice(IMAGE_KINDS)))
            files.append(path)
    for i, link in enumerate(case.links):
        folder = data / f"class_{rng.randrange(max(case.classes, 1))}"
        folder.mkdir(exist_ok=True)
        target = folder / f"link_{i}.png"
        if link == "outside-file":
            target.symlink_to(outside / "photo.png")
        elif link == "outside-dir":
            (data / f"linked_{i}").symlink_to(outside, target_is_directory=True)
        elif link == "dangling":
            target.symlink_to(root / "missing.png")
        elif link == "loop":
            target.symlink_to(target)
        elif link == "self":
            (folder / f"up_{i}").symlink_to(data, target_is_directory=True)
        else:
            os.mkfifo(target)
        files.append(target)
    return files


#: errors about the dataset as a whole (its size against the split, its classes), which
#: concern no one file
DATASET_LEVEL = ("split", "at least 2 classes")


def _names_a_file(message: str, candidates: list[str]) -> bool:
    return any(c in message for c in (*candidates, *DATASET_LEVEL))


def check_image_folder(case: FolderCase, root: Path) -> str:
    """load_data's image_folder (reading and splitting) on a generated folder."""
    import torchkiln.vision.loading  # noqa: F401  (torch: imported once, outside the bounds)
    from torchkiln.errors import RunError, UsageError
    from torchkiln.stages.load_data import SplitConfig
    from torchkiln.vision.datasets import ImageFolder

    what = f"image folder {case}"
    files = make_image_folder(case, root)
    with working_directory(root), bounded(what):
        cfg = ImageFolder.model_validate(
            {
                "name": "image_folder",
                "root": "data",
                "channels": case.channels,
                "image_size": case.image_size,
                "skip_corrupt": case.skip_corrupt,
            }
        )
        val, test, stratify = case.split
        split = SplitConfig(val=val, test=test, stratify=stratify)
        out = root / "out"
        out.mkdir(exist_ok=True)
        try:
            raw = cfg.load(case.seed)
            raw.write(out, dataset=cfg, split=split, seed=case.seed, task="classification")
        except (RunError, UsageError) as exc:
            message = str(exc)
            no_python_repr(message, what)
            names = ["data", *(p.relative_to(root).as_posix() for p in files)]
            if not _names_a_file(message, names):
                raise CaseFailure(
                    f"{what}: an error that names no file or folder: {message}"
                ) from exc
            return "refused"
        except Exception as exc:
            raise unexpected(what, exc) from exc
        if len(raw.files) != len(raw.labels) or len(raw.files) == 0:
            raise CaseFailure(f"{what}: {len(raw.files)} files but {len(raw.labels)} labels")
    return "read"


# text tables


@dataclass(frozen=True)
class TableCase:
    fmt: str
    encoding: str
    raw: bytes
    test_raw: bytes | None
    split: tuple[float, float, bool]
    tokenizer: str

    def __repr__(self) -> str:
        return (
            f"TableCase(fmt={self.fmt!r}, encoding={self.encoding!r}, raw={self.raw[:300]!r}, "
            f"test_raw={(self.test_raw or b'')[:100]!r}, split={self.split!r}, "
            f"tokenizer={self.tokenizer!r})"
        )


def _mostly(common: tuple[Any, ...], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A common value 9 times in 10, else an odd one: most cases get past the first check
    (the odd one is drawn at 5, since hypothesis favours the ends of a range)."""
    return st.integers(0, 9).flatmap(lambda i: odd if i == 5 else st.sampled_from(common))


CELL_TEXT = _mostly(
    ("good match today", "bank profit rose", "a song", "team won", 'say "hi"', "a,b", "x\ny"),
    st.one_of(
        st.sampled_from(
            ("", " ", "日本", "é", "x" * 200_000, "\x00", "\u2028", "\r", "\x1e", "\\")
        ),
        st.text(max_size=30),
    ),
)
LABELS = _mostly(
    ("a", "b", "c", "a", "b"),
    st.one_of(
        st.sampled_from(("1", "2", "-3", "--5", "²", "٣", "01", " ", "", "NaN", "-", "1.5")),
        st.text(max_size=5),
        st.integers(-(10**5), 10**5).map(str),
    ),
)


@st.composite
def csv_text(draw: st.DrawFn, delimiter: str) -> str:
    header = draw(
        _mostly(
            (["text", "label"], ["label", "text"], [" text ", "label"], ["text", "label", "n"]),
            st.sampled_from((["txt", "label"], ["text"], ["text", "text", "label"], [])),
        )
    )
    rows = [header]
    for _ in range(draw(st.integers(0, 12))):
        width = len(header) + draw(_mostly((0,), st.sampled_from((-1, 1, -2))))
        row = [draw(CELL_TEXT) for _ in range(max(width, 0))]
        if "label" in [h.strip() for h in header] and row:
            pos = [h.strip() for h in header].index("label")
            if pos < len(row):
                row[pos] = draw(LABELS)
        rows.append(row)
    buffer = io.StringIO()
    import csv

    writer = csv.writer(
        buffer, delimiter=delimiter, lineterminator=draw(st.sampled_from(("\n", "\r\n")))
    )
    for row in rows:
        writer.writerow(row)
    text = buffer.getvalue()
    if draw(st.integers(0, 9)) == 0:
        text = text[: draw(st.integers(0, len(text)))]
    if draw(st.integers(0, 9)) == 0:
        text = text.replace('"', "", 1)
    return text


def _json_containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=5), children, max_size=3)
    )


JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=10),
    ),
    _json_containers,
    max_leaves=6,
)


ODD_JSONL = (
    '{"text": "a", "label": NaN}',
    "{",
    "[" * 5000,
    '{"text": "a", "label": ' + "9" * 5000 + "}",
    '{"text": "a\u2028b", "label": "x"}',
    "",
)


@st.composite
def jsonl_text(draw: st.DrawFn) -> str:
    lines = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.integers(0, 19))
        if kind <= 5 or kind > 9:
            record = {"text": draw(CELL_TEXT), "label": draw(LABELS)}
            if kind == 1:
                record["label"] = draw(JSON_VALUES)
            elif kind == 2:
                record["text"] = draw(JSON_VALUES)
            elif kind == 3:
                del record[draw(st.sampled_from(("text", "label")))]
            lines.append(json.dumps(record, ensure_ascii=draw(st.booleans())))
        elif kind == 6:
            lines.append(json.dumps(draw(JSON_VALUES)))
        elif kind == 7:
            lines.append(draw(st.sampled_from(ODD_JSONL)))
        else:
            lines.append(draw(st.text(max_size=20)))
    text = "\n".join(lines)
    if draw(st.integers(0, 9)) == 0:
        text = text[: draw(st.integers(0, len(text)))]
    return text


ENCODINGS = ("utf-8",) * 10 + ("latin-1", "cp1252", "utf-16", "utf-8-sig", "ascii", "idna",
             "punycode", "unicode_escape", "utf-7", "rot13", "hex", "base64")  # fmt: skip


@st.composite
def table_cases(draw: st.DrawFn) -> TableCase:
    fmt = draw(_mostly(("csv", "tsv", "jsonl"), st.just("unknown")))
    encoding = draw(st.sampled_from(ENCODINGS))
    text = draw(jsonl_text() if fmt == "jsonl" else csv_text("\t" if fmt == "tsv" else ","))
    write_as = draw(_mostly(("utf-8",), st.sampled_from(("latin-1", "utf-16", "random"))))
    if write_as == "random":
        raw = draw(st.binary(max_size=200))
    else:
        raw = text.encode(write_as, "replace")
    if draw(st.integers(0, 5)) == 0:
        raw = b"\xef\xbb\xbf" + raw
    test_raw = raw if draw(st.integers(0, 4)) == 0 else None
    split = (
        draw(st.sampled_from((0.0, 0.2, 0.2, 0.5))),
        draw(st.sampled_from((0.0, 0.2, 0.2, 0.4))),
        draw(st.booleans()),
    )
    tokenizer = draw(st.sampled_from(("word", "char")))
    return TableCase(fmt, encoding, raw, test_raw, split, tokenizer)


def _run_error_names(message: str, file: str, what: str) -> None:
    no_python_repr(message, what)
    if file not in message:
        raise CaseFailure(f"{what}: an error that does not name {file}: {message[:300]}")


def check_text_table(case: TableCase, root: Path) -> str:
    """load_data's text_table: reading, splitting, the vocabulary, the artifact."""
    from pydantic import ValidationError

    import torchkiln.text.loading  # noqa: F401  (torch: imported once, outside the bounds)
    from torchkiln.errors import RunError, UsageError
    from torchkiln.stages.load_data import SplitConfig
    from torchkiln.text.datasets import TextTable

    what = repr(case)
    suffix = {"csv": ".csv", "tsv": ".tsv", "jsonl": ".jsonl", "unknown": ".dat"}[case.fmt]
    path = root / f"table{suffix}"
    path.write_bytes(case.raw)
    block: dict[str, Any] = {
        "name": "text_table",
        "path": path.name,
        "encoding": case.encoding,
        "tokenizer": case.tokenizer,
        "vocab": {"min_freq": 1},
    }
    if case.test_raw is not None:
        (root / f"test{suffix}").write_bytes(case.test_raw)
        block["test_path"] = f"test{suffix}"
    with working_directory(root), bounded(what):
        try:
            cfg = TextTable.model_validate(block)
        except ValidationError:
            return "invalid config"  # validation refuses it (a positioned spec error)
        val, test, stratify = case.split
        try:
            split = SplitConfig(val=val, test=test, stratify=stratify)
        except ValidationError:
            return "invalid config"
        out = root / "out"
        out.mkdir(exist_ok=True)
        try:
            raw = cfg.load(0)
            raw.write(out, dataset=cfg, split=split, seed=0, task="classification")
        except (RunError, UsageError) as exc:
            message = str(exc)
            named = [path.name, f"test{suffix}"]
            no_python_repr(message, what)
            if not _names_a_file(message, named):
                raise CaseFailure(f"{what}: an error that names no file: {message[:300]}") from exc
            return "refused"
        except Exception as exc:
            raise unexpected(what, exc) from exc
    return "read"


# series tables


@dataclass(frozen=True)
class SeriesCase:
    raw: bytes
    time_format: str | None
    freq: str | None
    fill: str
    with_id: bool
    separator: str
    covariates: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]
    windows: tuple[int, int]
    split: tuple[int, int]

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items() if k != "raw")
        return f"SeriesCase({fields}, raw={self.raw[:600]!r})"


TIME_STYLES = ("%Y-%m-%d", "%Y-%m", "%Y%m%d", "%Y-%m-%d %H:%M:%S", "%d/%m/%Y", "year", "quarter",
               "iso-ns", "tz")  # fmt: skip


def _stamp(style: str, i: int, step: str) -> str:
    import datetime as dt

    base = dt.datetime(2000, 1, 1)
    if step == "month":
        year, month = 2000 + i // 12, i % 12 + 1
        moment = dt.datetime(year, month, 1)
    elif step == "hour":
        moment = base + dt.timedelta(hours=i)
    elif step == "ns":
        return f"2000-01-01T00:00:00.{i:09d}"
    else:
        moment = base + dt.timedelta(days=i)
    if style == "year":
        return str(1990 + i)
    if style == "quarter":
        return f"{1990 + i // 4} Q{i % 4 + 1}"
    if style == "iso-ns":
        return moment.isoformat() + ".000000001"
    if style == "tz":
        return moment.isoformat() + "+05:00"
    return moment.strftime(style)


ODD_CELLS = ("", "nan", "NA", "inf", "-inf", "1e400", "abc", "1,5", " 3 ", "0x10", "1_000", "--1",
             "True", "9" * 400)  # fmt: skip
ODD_TIMES = ("", "not a date", "99999-01-01", "0001-01-01", "2262-04-12", "1677-09-21",
             "2000-02-30", "2000-13-01", "1e10", "-1", "2000-01-01T25:00", "2000 Q5")  # fmt: skip


def _rarely(draw: st.DrawFn, one_in: int) -> bool:
    """True once in `one_in` draws: hypothesis favours the ends of a range, so the odd
    value is one in the middle."""
    return draw(st.integers(0, one_in - 1)) == one_in // 2


@st.composite
def series_cases(draw: st.DrawFn) -> SeriesCase:
    """A well-formed series table most of the time (so the later steps are reached), with
    rare odd steps, cells, headers, separators, formats and frequencies."""
    style = draw(st.sampled_from(TIME_STYLES))
    step = draw(_mostly(("day", "month"), st.sampled_from(("hour", "ns"))))
    n = draw(st.sampled_from((40, 40, 24, 12, 3, 1, 0)))
    with_id = draw(st.booleans())
    past = ("temp",) if draw(st.booleans()) else ()
    future = ("promo",) if draw(st.booleans()) else ()
    static = ("size",) if draw(st.booleans()) else ()
    header = ["time", *(["shop"] if with_id else []), "sales", *past, *future, *static]
    if _rarely(draw, 20):
        header.remove(draw(st.sampled_from(header)))
    sep = draw(_mostly((",",), st.sampled_from((";", "\t"))))
    said = sep if not _rarely(draw, 10) else ","  # a wrong `separator:` now and then
    rows = [sep.join(header)]
    i = 0
    for r in range(n):
        i += draw(st.sampled_from((2, 0, -1, 50))) if _rarely(draw, 100) else 1
        cells = []
        for column in header:
            if column == "time":
                cell = _stamp(style, max(i, 0), step)
                if _rarely(draw, 200):
                    cell = draw(st.sampled_from(ODD_TIMES))
            elif column == "size":
                cell = "3" if _rarely(draw, 200) else "2"  # static: one value a series
            elif column == "shop":
                cell = "north" if r % 2 else "south"
                if _rarely(draw, 100):
                    cell = ""
            else:
                cell = str(round(math.sin(r) * 10 + r, 3))
                if _rarely(draw, 100):
                    cell = draw(st.sampled_from(ODD_CELLS))
            cells.append(cell)
        rows.append(sep.join(cells))
    text = "\n".join(rows) + draw(st.sampled_from(("\n", "", "\n\n", "\r\n")))
    if _rarely(draw, 10):
        text = text[: draw(st.integers(0, len(text)))]
    raw = text.encode("utf-8")
    if _rarely(draw, 20):
        raw = draw(st.binary(max_size=200))
    elif _rarely(draw, 20):
        raw = text.encode("latin-1", "replace") + b"\xe9"
    matching = None if style in ("iso-ns", "tz") else style
    time_format = draw(
        _mostly((matching, matching, None), st.sampled_from(("%Q", "%", "%Y-%m", "year", "%s")))
    )
    freq = draw(
        _mostly(
            (None,),
            st.sampled_from(("MS", "D", "h", "W-SAT", "0D", "-1D", "ns", "bogus", "1000000000D",
                             "QS", "YS", "min")),
        )
    )  # fmt: skip
    lookback, horizon = draw(st.integers(1, 12)), draw(st.integers(1, 6))
    return SeriesCase(
        raw=raw,
        time_format=time_format,
        freq=freq,
        fill=draw(st.sampled_from(("none", "ffill", "interpolate", "zero"))),
        with_id=with_id,
        separator=said,
        covariates=(past, future, static),
        windows=(lookback, horizon),
        split=(horizon * draw(st.sampled_from((0, 1, 2))), horizon + draw(st.integers(0, 2))),
    )


def _load_series(cfg: Any, out: Path) -> None:
    """What the load_series stage does with a validated `cfg`, writing into `out`."""
    cfg.dataset.load(0).write_series(
        out,
        windows=cfg.windows,
        split=cfg.split,
        scaling=cfg.scaling,
        task="forecast",
        source=cfg.dataset.model_dump(mode="json"),
    )


def check_series_table(case: SeriesCase, root: Path) -> str:
    """load_series with csv_series: reading the table, splitting, filling, windows, scaling."""
    from pydantic import ValidationError

    import torchkiln.forecast.loading  # noqa: F401  (pandas: imported once, outside the bounds)
    from torchkiln.errors import RunError, UsageError
    from torchkiln.forecast.datasets import CsvSeries
    from torchkiln.forecast.stages import LoadSeriesConfig

    what = repr(case)
    path = root / "series.csv"
    path.write_bytes(case.raw)
    past, future, static = case.covariates
    block = {
        "dataset": {
            "name": "csv_series",
            "path": "series.csv",
            "time_column": "time",
            "targets": ["sales"],
            "id_column": "shop" if case.with_id else None,
            "covariates": {"past": list(past), "future": list(future), "static": list(static)},
            "time_format": case.time_format,
            "freq": case.freq,
            "fill": case.fill,
            "separator": case.separator,
        },
        "windows": {"lookback": case.windows[0], "horizon": case.windows[1]},
        "split": {"val": case.split[0], "test": case.split[1]},
    }
    with working_directory(root), bounded(what):
        try:
            cfg = LoadSeriesConfig.model_validate(block)
        except ValidationError:
            return "invalid config"
        assert isinstance(cfg.dataset, CsvSeries)
        out = root / "out"
        out.mkdir(exist_ok=True)
        try:
            _load_series(cfg, out)
        except (RunError, UsageError) as exc:
            message = str(exc)
            no_python_repr(message, what)
            if "series.csv" not in message and "freq" not in message:
                raise CaseFailure(
                    f"{what}: an error that does not name the file: {message[:300]}"
                ) from exc
            return "refused"
        except Exception as exc:
            raise unexpected(what, exc) from exc
    return "read"


# kiln predict inputs


@contextlib.contextmanager
def patched(owner: Any, name: str, value: Any) -> Iterator[None]:
    """`owner.name = value` for the body (the harness needs no pytest monkeypatch)."""
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


def _zeros_runner(shape_of: Callable[[int], tuple[int, ...]]) -> Callable[..., Any]:
    """Stands in for the exported model: predict's own work is reading and encoding the
    inputs, which is what is fuzzed; a real ONNX model would only cost time."""
    import numpy as np

    def run(first: Any, *rest: Any) -> Any:
        n = len(next(iter(first.values()))) if isinstance(first, dict) else len(first)
        return np.zeros(shape_of(n), dtype=np.float32)

    return run


def _predict_args(inputs: list[str], file: str | None, top: int, as_json: bool) -> Any:
    import argparse

    return argparse.Namespace(inputs=inputs, file=file, top=top, json=as_json, format="onnx")


def _run_predict(call: Callable[[], int], what: str) -> tuple[int, str]:
    """(exit code, stderr and the error's message) of one predictor call; the product's
    own errors become their exit code, anything else is a failure."""
    from torchkiln.errors import RunError, UsageError

    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = call()
        except (RunError, UsageError) as exc:
            code = exc.exit_code
            err.write(f"error: {exc}\n")
        except Exception as exc:
            raise unexpected(what, exc) from exc
    no_python_repr(err.getvalue(), what)
    return code, err.getvalue()


PREDICT_IMAGE_KINDS = ("valid", "valid", "truncated", "corrupt", "random", "empty", "bomb")


@dataclass(frozen=True)
class ImagePredictCase:
    seed: int
    entries: tuple[str, ...]  # what each command-line input is
    top: int
    as_json: bool


@st.composite
def image_predict_cases(draw: st.DrawFn) -> ImagePredictCase:
    entry = st.sampled_from((*PREDICT_IMAGE_KINDS, "folder", "missing", "link-out", "dir-empty"))
    return ImagePredictCase(
        seed=draw(st.integers(0, 2**32 - 1)),
        entries=tuple(draw(st.lists(entry, min_size=0, max_size=4))),
        top=draw(st.sampled_from((1, 1, 3, 0, -1, 100))),
        as_json=draw(st.booleans()),
    )


def check_image_predict(case: ImagePredictCase, root: Path) -> str:
    """`kiln predict SPEC IMAGE... | DIR` of an image classifier: every input either
    classified or reported on its own line naming it (exit 1); a bad argument is a usage
    error naming it."""
    from torchkiln.vision import predict

    what = repr(case)
    rng = random.Random(case.seed)
    work = root / "predict_images"
    if work.exists():
        import shutil

        shutil.rmtree(work)
    work.mkdir(parents=True)
    inputs: list[str] = []
    for i, kind in enumerate(case.entries):
        path = work / f"in_{i}{rng.choice(SUFFIXES[:12])}"
        if kind == "folder":
            path = work / f"folder_{i}"
            path.mkdir()
            for j in range(rng.randrange(1, 4)):
                name = f"img_{j}{rng.choice(SUFFIXES)}"
                (path / name).write_bytes(image_bytes(rng, rng.choice(PREDICT_IMAGE_KINDS)))
        elif kind == "dir-empty":
            path = work / f"empty_{i}"
            path.mkdir()
        elif kind == "link-out":
            outside = root / "outside_predict.png"
            outside.write_bytes(image_bytes(rng, "valid"))
            path.symlink_to(outside)
        elif kind != "missing":
            path.write_bytes(image_bytes(rng, kind))
        inputs.append(path.relative_to(root).as_posix())
    card = {"classes": ["a", "b", "c"], "input": {"modality": "image", "shape": [3, 8, 8]}}
    args = _predict_args(inputs, None, case.top, case.as_json)
    fake = _zeros_runner(lambda n: (n, 3))
    with (
        working_directory(root),
        bounded(what),
        patched(predict, "runner", lambda fmt, path: fake),
    ):
        code, message = _run_predict(
            lambda: predict.predict_images(args, work, card, "onnx", work / "model.onnx"), what
        )
    if code == 0:
        return "classified"
    if code == 2 and (case.top < 1 or not inputs or any(e in message for e in inputs)):
        return "usage error"
    if code == 1:
        lines = [line for line in message.splitlines() if line.strip()]
        for line in lines[:-1]:  # the last line is the summary
            if not any(e in line for e in inputs):
                raise CaseFailure(f"{what}: an error line naming no input: {line}")
        return "some unreadable"
    raise CaseFailure(f"{what}: exit {code}: {message[:300]}")


@dataclass(frozen=True)
class TextPredictCase:
    texts: tuple[str, ...]
    file: bytes | None
    top: int
    as_json: bool

    def __repr__(self) -> str:
        texts = tuple(t[:80] for t in self.texts)
        file = None if self.file is None else self.file[:300]
        return (
            f"TextPredictCase(texts={texts!r}, file={file!r}, top={self.top}, json={self.as_json})"
        )


@st.composite
def text_predict_cases(draw: st.DrawFn) -> TextPredictCase:
    text = st.one_of(
        st.sampled_from(("team won the match", "", " ", "\x00", "\u2028", "x" * 100_000)),
        st.text(max_size=40),
    )
    file = st.one_of(
        st.none(),
        st.none(),
        st.binary(max_size=200),
        st.lists(text, max_size=5).map(lambda ts: "\n".join(ts).encode("utf-8", "surrogatepass")),
    )
    return TextPredictCase(
        texts=tuple(draw(st.lists(text, max_size=4))),
        file=draw(file),
        top=draw(st.sampled_from((1, 1, 2, 0, 50))),
        as_json=draw(st.booleans()),
    )


_TEXT_EXPORTS: dict[Path, Path] = {}


def text_export(root: Path) -> Path:
    """An export folder of a text classifier (tokenizer.json and vocab.json as load_data
    writes them, a model card), made once per scratch folder."""
    if root not in _TEXT_EXPORTS:
        from torchkiln.stages.load_data import SplitConfig
        from torchkiln.text.datasets import TextTable

        folder = root / "text_export"
        folder.mkdir(parents=True, exist_ok=True)
        rows = "\n".join(f"word{i % 7} team match,{'ab'[i % 2]}" for i in range(20))
        (folder / "table.csv").write_text(f"text,label\n{rows}\n", encoding="utf-8")
        with working_directory(folder):
            cfg = TextTable.model_validate({"name": "text_table", "path": "table.csv"})
            raw = cfg.load(0)
            raw.write(folder, dataset=cfg, split=SplitConfig(), seed=0, task="classification")
        card = {"classes": ["a", "b"], "input": {"modality": "text"}, "task": "classification"}
        (folder / "model_card.json").write_text(json.dumps(card), encoding="utf-8")
        _TEXT_EXPORTS[root] = folder
    return _TEXT_EXPORTS[root]


def check_text_predict(case: TextPredictCase, root: Path) -> str:
    """`kiln predict SPEC "text"... [--file FILE]` of a text classifier."""
    from torchkiln.text import predict

    what = repr(case)
    folder = text_export(root)
    file = None
    if case.file is not None:
        (root / "texts.txt").write_bytes(case.file)
        file = "texts.txt"
    args = _predict_args(list(case.texts), file, case.top, case.as_json)
    fake = _zeros_runner(lambda n: (n, 2))
    with (
        working_directory(root),
        bounded(what),
        patched(predict.Classifier, "_onnx", lambda self, path: fake),
    ):
        code, message = _run_predict(
            lambda: predict.predict_text(args, folder, {}, "onnx", folder / "model.onnx"), what
        )
    if code == 0:
        return "classified"
    if code == 2 and (case.top < 1 or "texts.txt" in message or not case.texts):
        return "usage error"
    raise CaseFailure(f"{what}: exit {code}: {message[:300]}")


_SERIES_EXPORTS: dict[Path, Path] = {}


def series_export(root: Path) -> Path:
    """An export folder of a forecaster (series.json as load_series writes it, for a table
    with two shops, a past and a known-future covariate), made once per scratch folder."""
    if root not in _SERIES_EXPORTS:
        from torchkiln.forecast.stages import LoadSeriesConfig

        folder = root / "series_export"
        folder.mkdir(parents=True, exist_ok=True)
        rows = [
            f"2000-{m + 1:02d}-01,{shop},{10 + m + k},{m % 3},{m % 2}"
            for k, shop in enumerate(("north", "south"))
            for m in range(12)
        ]
        (folder / "train.csv").write_text(
            "time,shop,sales,temp,promo\n" + "\n".join(rows) + "\n", encoding="utf-8"
        )
        block = {
            "dataset": {
                "name": "csv_series",
                "path": "train.csv",
                "time_column": "time",
                "targets": ["sales"],
                "id_column": "shop",
                "covariates": {"past": ["temp"], "future": ["promo"]},
            },
            "windows": {"lookback": 3, "horizon": 2},
            "split": {"val": 2, "test": 2},
        }
        with working_directory(folder):
            cfg = LoadSeriesConfig.model_validate(block)
            _load_series(cfg, folder)
        card = {"task": "forecast", "input": {"modality": "series"}}
        (folder / "model_card.json").write_text(json.dumps(card), encoding="utf-8")
        _SERIES_EXPORTS[root] = folder
    return _SERIES_EXPORTS[root]


@dataclass(frozen=True)
class SeriesPredictCase:
    raw: bytes
    inputs: tuple[str, ...]
    as_json: bool

    def __repr__(self) -> str:
        head = f"SeriesPredictCase(inputs={self.inputs!r}, json={self.as_json}"
        return f"{head}, raw={self.raw[:600]!r})"


@st.composite
def series_predict_cases(draw: st.DrawFn) -> SeriesPredictCase:
    """Mostly a table shaped like the export's, with odd cells; else any series table."""
    raw = draw(series_cases()).raw if draw(st.integers(0, 3)) == 0 else _shop_table(draw)
    return SeriesPredictCase(
        raw=raw,
        inputs=("x",) if draw(st.integers(0, 9)) == 0 else (),
        as_json=draw(st.booleans()),
    )


def _shop_table(draw: st.DrawFn) -> bytes:
    """A table shaped like the export's (shop, sales, temp, promo): each shop's history,
    mostly followed by the known-future rows the model needs (promo set, sales empty),
    with odd cells here and there."""
    lines = ["time,shop,sales,temp,promo"]
    shops = draw(st.sampled_from((("north",), ("north", "south"), ("north", "south"), ("west",))))
    for shop in shops:
        history = draw(st.sampled_from((5, 5, 8, 2, 0)))
        future = draw(st.sampled_from((2, 2, 2, 1, 0, 3)))
        for m in range(history + future):
            sales = str(m) if m < history else ""
            cells = [f"2001-{m % 12 + 1:02d}-01", shop, sales, str(m % 3), str(m % 2)]
            if draw(st.integers(0, 15)) == 0:
                cells[draw(st.integers(0, 4))] = draw(st.sampled_from(ODD_CELLS + ODD_TIMES))
            lines.append(",".join(cells))
    return "\n".join(lines).encode()


def check_series_predict(case: SeriesPredictCase, root: Path) -> str:
    """`kiln predict SPEC --file series.csv` of a forecaster."""
    from torchkiln.forecast import predict

    what = repr(case)
    folder = series_export(root)
    (root / "history.csv").write_bytes(case.raw)
    args = _predict_args(list(case.inputs), "history.csv", 1, case.as_json)
    fake = _zeros_runner(lambda n: (n, 2, 1))
    with (
        working_directory(root),
        bounded(what),
        patched(predict, "_runner", lambda fmt, path, names: fake),
    ):
        code, message = _run_predict(
            lambda: predict.predict_series(args, folder, {}, "onnx", folder / "model.onnx"), what
        )
    if code == 0:
        return "forecast"
    if code == 2 and ("history.csv" in message or case.inputs):
        return "usage error"
    raise CaseFailure(f"{what}: exit {code}: {message[:300]}")


# --- targets --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    strategy: Callable[[], st.SearchStrategy[Any]]
    #: (case, scratch folder) -> outcome
    check: Callable[[Any, Path], str]
    #: share of a long run's cases
    weight: int


def _spec_check(case: SpecCase, root: Path) -> str:
    workspace = _WORKSPACES.get(root)
    if workspace is None:
        workspace = _WORKSPACES[root] = SpecWorkspace(root)
    return check_spec(case, workspace)


_WORKSPACES: dict[Path, SpecWorkspace] = {}


TARGETS = {
    t.name: t
    for t in (
        Target("spec", spec_cases, _spec_check, 60),
        Target("image_folder", folder_cases, check_image_folder, 10),
        Target("text_table", table_cases, check_text_table, 10),
        Target("series_table", series_cases, check_series_table, 10),
        Target("predict_image", image_predict_cases, check_image_predict, 4),
        Target("predict_text", text_predict_cases, check_text_predict, 3),
        Target("predict_series", series_predict_cases, check_series_predict, 3),
    )
}


# --- running ----------------------------------------------------------------------------------


def ci_settings(max_examples: int) -> settings:
    """The CI budget: deterministic (the same cases on every run, so a red CI is
    reproducible), no example database (no `.hypothesis/` folder), no wall-clock deadline
    (the bounds above use CPU time, robust on a shared machine), shrinking on."""
    return settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        print_blob=True,
        suppress_health_check=list(HealthCheck),
    )


@dataclass
class Tally:
    """What a long run of one target saw: outcomes by name, and each distinct failure."""

    target: str
    cases: int = 0
    seconds: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # signature -> first message


def _signature(message: str) -> str:
    """Failures that differ only in their case are one bug: key them by where they were
    raised (or by the message with its case removed)."""
    where = re.search(r" at (\S+:\d+)$", message)
    kind = re.search(r": ([A-Za-z_]+(?:Error|Exception|Failure)):", message)
    if where:
        return f"{kind.group(1) if kind else ''} {where.group(1)}"
    return re.sub(r"\d+", "N", message.split(": ", 2)[-1])[:120]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The product's progress lines and library warnings (PIL on odd EXIF data) are not
    outcomes: keep them out of a long run's report."""
    import warnings

    with (
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        yield


def run_one(target: Target, case: Any, root: Path) -> str:
    """One case of `target`, quietly; raises `CaseFailure` on a disallowed outcome."""
    with quiet():
        return target.check(case, root)


def run_cases(target: Target, cases: int, root: Path, seed: int, tally: Tally) -> None:
    """Run `cases` generated cases of `target` (no shrinking), recording failures in
    `tally` and going on: a long run counts bugs, where a test stops at the first."""

    @settings(
        max_examples=cases,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(target.strategy())
    def one(case: Any) -> None:
        tally.cases += 1
        try:
            outcome = run_one(target, case, root)
        except CaseFailure as exc:
            key = _signature(str(exc))
            if key not in tally.failures:
                tally.failures[key] = str(exc)
                print(f"FAILURE ({tally.target}): {exc}", flush=True)  # as soon as found
            outcome = "FAILED"
        tally.outcomes[outcome] = tally.outcomes.get(outcome, 0) + 1

    started = time.perf_counter()
    hypothesis_seed(seed)(one)()
    tally.seconds += time.perf_counter() - started
