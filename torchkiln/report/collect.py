"""What `kiln report` shows, read from files: the workspace's or a git revision's.

Nothing here imports torch or numpy. A pipeline's stages write
`runs/<pipeline>/<stage>/{out/,metrics.json,plots/}` (torchkiln/layout.py); the report
reads what is there by its shape, not by stage kind, so every task family (classification,
text, GANs, forecasting, a plugin's) shows up without a case of its own:

- `metrics.json` -> metrics; `plots/history.json` (a list of per-epoch records) -> curves;
  every image in `plots/` -> a figure, one folder below (`plots/samples/`) -> a gallery;
- `out/meta.json` of a dataset artifact -> the data summary; `out/preview.png` -> the
  augmentation preview; `out/misclassified.jsonl` -> misclassified examples;
- `out/model_card.json` -> export parity, digests and library versions.

Other revisions are read with `git show REV:path` (metrics.json and plots/ are committed
to git in a torchkiln project; DVC-tracked outs are not in git, so a revision shows what
its commit holds). A revision is a commit, a tag, a branch, or a DVC experiment's name
(DVC keeps each experiment as a git ref `refs/exps/<baseline[:2]>/<baseline[2:]>/<name>`,
resolved here the way `dvc exp` resolves names, without starting DVC).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from torchkiln.errors import SpecError, UsageError
from torchkiln.layout import dvc_stage_name, stage_paths

if TYPE_CHECKING:
    from torchkiln.schemas.spec import Pipeline

#: Image files inlined into the report, recognised by their first bytes (never by name).
IMAGE_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif")
#: An image larger than this is named, not inlined (the report stays a few MB at most).
MAX_IMAGE_BYTES = 4 * 1024 * 1024
#: A gallery folder (a GAN's per-epoch sample grids) shows at most this many, evenly spaced.
MAX_GALLERY = 24
#: Misclassified examples shown (the file may hold thousands).
MAX_EXAMPLES = 50
GIT_TIMEOUT = 60
DVC_TIMEOUT = 300
#: Libraries named when no model card records versions (what a run of the pipeline used).
VERSION_PACKAGES = (
    "torchkiln",
    "torch",
    "torchvision",
    "numpy",
    "pydantic",
    "dvc",
    "onnx",
    "onnxruntime",
    "safetensors",
)


# -- reading files: the workspace, or a git revision -----------------------------------------


class Tree(Protocol):
    """Files of the project at one point in time, by POSIX path relative to its root."""

    def read(self, path: str) -> bytes | None: ...

    def files(self, folder: str) -> list[str]: ...


@dataclass(frozen=True)
class Workspace:
    """The files on disk (relative to the working directory, the project root)."""

    root: Path = Path(".")

    def read(self, path: str) -> bytes | None:
        try:
            return (self.root / path).read_bytes()
        except OSError:
            return None

    def files(self, folder: str) -> list[str]:
        base = self.root / folder
        if not base.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())


@dataclass(frozen=True)
class GitTree:
    """The files a git commit holds (`git show SHA:./path`)."""

    sha: str

    def read(self, path: str) -> bytes | None:
        result = _git("show", f"{self.sha}:./{path}", text=False)
        return result.stdout if result is not None and result.returncode == 0 else None

    def files(self, folder: str) -> list[str]:
        result = _git("ls-tree", "-r", "--name-only", self.sha, "--", folder)
        if result is None or result.returncode != 0:
            return []
        return sorted(line for line in result.stdout.splitlines() if line)


def read_json(tree: Tree, path: str) -> Any:
    """The JSON at `path`, or None when it is absent or not JSON."""
    raw = tree.read(path)
    if raw is None:
        return None
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


# -- git and DVC -----------------------------------------------------------------------------


def _git(*args: str, text: bool = True) -> subprocess.CompletedProcess[Any] | None:
    """`git ARGS` in the working directory; None when git is not installed."""
    try:
        return subprocess.run(
            ["git", *args], capture_output=True, text=text, timeout=GIT_TIMEOUT, check=False
        )
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None


@dataclass(frozen=True)
class GitState:
    """Where the workspace stands: HEAD, its branch, and whether tracked files changed."""

    repository: bool
    head: str | None = None
    branch: str | None = None
    changed: tuple[str, ...] = ()
    note: str = ""

    @property
    def dirty(self) -> bool:
        return bool(self.changed)


def git_state() -> GitState:
    probe = _git("rev-parse", "--is-inside-work-tree")
    if probe is None:
        return GitState(False, note="git is not installed")
    if probe.returncode != 0 or probe.stdout.strip() != "true":
        return GitState(False, note="not a git repository")
    head = _git("rev-parse", "--verify", "--quiet", "HEAD")
    if head is None or head.returncode != 0:
        return GitState(True, note="no commits yet")
    branch = _git("rev-parse", "--abbrev-ref", "HEAD")
    # Tracked files only (as `git describe --dirty`): an untracked scratch file is no change.
    status = _git("status", "--porcelain", "--untracked-files=no")
    changed = tuple(
        line[3:] for line in (status.stdout.splitlines() if status is not None else []) if line
    )
    name = branch.stdout.strip() if branch is not None and branch.returncode == 0 else None
    return GitState(True, head.stdout.strip(), None if name == "HEAD" else name, changed)


@dataclass(frozen=True)
class Revision:
    """A revision to compare: what the user called it, and the commit it names."""

    label: str
    sha: str
    #: "workspace", "commit" or "experiment"
    kind: str

    @property
    def tree(self) -> Tree:
        return Workspace() if self.kind == "workspace" else GitTree(self.sha)


_EXP_REF = re.compile(r"^refs/exps/([0-9a-f]{2})/([0-9a-f]{38})/(.+)$")


def experiment_refs(head: str | None = None) -> dict[str, str]:
    """DVC experiment name -> commit. A name used from several baselines means the one
    based on `head` (as `dvc exp` resolves it), else the first."""
    result = _git("for-each-ref", "--format=%(refname)%09%(objectname)", "refs/exps/")
    found: dict[str, str] = {}
    if result is None or result.returncode != 0:
        return found
    for line in sorted(result.stdout.splitlines()):
        ref, _, sha = line.partition("\t")
        match = _EXP_REF.match(ref)
        if match is None:
            continue
        baseline, name = match[1] + match[2], match[3]
        if name not in found or baseline == head:
            found[name] = sha
    return found


def resolve_revisions(revs: Sequence[str], state: GitState) -> list[Revision]:
    """Each `--rev` as a commit; an unknown one is a usage error naming it."""
    if not revs:
        return []
    if not state.repository:
        raise UsageError(f"--rev needs a git repository; this folder is {state.note}")
    experiments: dict[str, str] | None = None
    resolved = []
    for rev in revs:
        sha = None
        if rev and not rev.startswith("-"):
            result = _git(
                "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}"
            )
            if result is not None and result.returncode == 0:
                sha = result.stdout.strip()
        if sha is not None:
            resolved.append(Revision(rev, sha, "commit"))
            continue
        if experiments is None:
            experiments = experiment_refs(state.head)
        if rev in experiments:
            resolved.append(Revision(rev, experiments[rev], "experiment"))
            continue
        raise UsageError(_unknown_revision(rev, list(experiments)))
    return resolved


def _unknown_revision(rev: str, experiments: list[str]) -> str:
    from torchkiln.registry.registry import did_you_mean

    result = _git("for-each-ref", "--format=%(refname:short)", "refs/heads/", "refs/tags/")
    names = result.stdout.split() if result is not None and result.returncode == 0 else []
    known = sorted(set(names) | set(experiments))
    hint = did_you_mean(rev, known)
    return (
        f"unknown revision {rev!r}: not a commit, branch, tag or DVC experiment; {hint}"
        "(git log --oneline, git tag and dvc exp list show what exists)"
    )


@dataclass(frozen=True)
class DvcState:
    """`dvc status` of the pipeline stages: None per stage means up to date."""

    available: bool
    note: str = ""
    #: DVC stage name -> its changes (dvc status entries), or None when up to date
    changes: dict[str, list[Any] | None] = field(default_factory=dict)
    #: stages of the specs that dvc.yaml does not have (run `kiln dvc`)
    missing: tuple[str, ...] = ()


def dvc_state(stage_names: Iterable[str], dvc: str | None) -> DvcState:
    """Run `dvc status --json STAGES` once for every stage the report covers."""
    wanted = list(stage_names)
    if dvc is None:
        return DvcState(False, "dvc is not installed")
    if not Path(".dvc").is_dir():
        return DvcState(False, "not a DVC repository (no .dvc/ here): run `dvc init`")
    declared = _dvc_yaml_stages()
    if declared is None:
        return DvcState(False, "no dvc.yaml: run `kiln dvc`")
    present = [s for s in wanted if s in declared]
    missing = tuple(s for s in wanted if s not in declared)
    if not present:
        return DvcState(True, "", {}, missing)
    try:
        result = subprocess.run(
            [dvc, "status", "--json", *present],
            capture_output=True,
            text=True,
            timeout=DVC_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return DvcState(False, f"dvc status did not finish: {exc}")
    if result.returncode != 0:
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        return DvcState(False, "dvc status failed: " + (lines[-1] if lines else "no message"))
    try:
        status = json.loads(result.stdout.strip().splitlines()[-1]) if result.stdout.strip() else {}
    except (ValueError, IndexError):
        return DvcState(False, "dvc status printed no JSON")
    changes = {s: status.get(s) for s in present}
    return DvcState(True, "", changes, missing)


def _dvc_yaml_stages() -> set[str] | None:
    import yaml

    try:
        data = yaml.safe_load(Path("dvc.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    stages = data.get("stages") if isinstance(data, dict) else None
    return set(stages) if isinstance(stages, dict) else set()


# -- the spec --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpecRow:
    """One value of a spec: its dotted path, the value, and where it came from."""

    path: str
    value: Any
    #: `file:line` where it was written, or "default" (filled in by the schema)
    origin: str


def spec_view(pipeline: Pipeline) -> list[SpecRow]:
    """The spec as the report shows it: merged through `extends:`, every default filled in,
    each value with where it was written (`kiln show`'s view) or `default`."""
    from torchkiln.schemas.view import leaves, origin_text, resolved

    return [
        SpecRow(dotted(tuple(v["path"])), v["value"], origin_text(v["origin"]))
        for v in leaves(resolved(pipeline), pipeline.doc)
    ]


def _get(data: Any, loc: Sequence[str | int]) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def flatten(data: Any, loc: tuple[str | int, ...] = ()) -> list[tuple[tuple[str | int, ...], Any]]:
    """Leaves of nested dicts by location; a list of plain values is one leaf, a list
    holding mappings is entered by index."""
    if isinstance(data, dict):
        if not data and loc:
            return [(loc, {})]
        out = []
        for key, value in data.items():
            out.extend(flatten(value, (*loc, str(key))))
        return out
    if isinstance(data, list) and any(isinstance(v, (dict, list)) for v in data):
        out = []
        for i, value in enumerate(data):
            out.extend(flatten(value, (*loc, i)))
        return out
    return [(loc, data)]


def dotted(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


# -- one pipeline in the workspace ------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    """An image file to inline: its path, MIME type (from its first bytes) and bytes."""

    path: str
    mime: str
    data: bytes

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def size(self) -> tuple[int, int] | None:
        """(width, height) of a PNG, from its header; None for other formats."""
        if self.mime != "image/png" or len(self.data) < 24:
            return None
        return int.from_bytes(self.data[16:20], "big"), int.from_bytes(self.data[20:24], "big")


@dataclass
class Gallery:
    """Images of one folder under plots/ (a GAN's `samples/`), a spaced selection."""

    folder: str
    images: list[Image]
    total: int


@dataclass
class StageData:
    """What one stage left on disk."""

    name: str
    kind: str
    dvc_name: str
    root: str
    metrics: dict[str, Any] | None = None
    history: list[dict[str, Any]] | None = None
    figures: list[Image] = field(default_factory=list)
    galleries: list[Gallery] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    dataset: dict[str, Any] | None = None
    preview: Image | None = None
    misclassified: list[dict[str, Any]] | None = None
    misclassified_total: int = 0
    card: dict[str, Any] | None = None

    @property
    def empty(self) -> bool:
        return not (
            self.metrics or self.history or self.figures or self.galleries or self.dataset
            or self.preview or self.misclassified is not None or self.card
        )  # fmt: skip


@dataclass
class PipelineData:
    name: str
    spec_file: str
    task: str
    spec: list[SpecRow]
    stages: list[StageData]
    #: library -> version, and where they came from
    versions: dict[str, str]
    versions_source: str


def image_of(path: str, data: bytes | None) -> Image | None:
    if data is None or len(data) > MAX_IMAGE_BYTES:
        return None
    for signature, mime in IMAGE_SIGNATURES:
        if data.startswith(signature):
            return Image(path, mime, data)
    return None


def collect_pipeline(pipeline: Pipeline, tree: Tree | None = None) -> PipelineData:
    tree = tree or Workspace()
    stages = [
        collect_stage(pipeline.name, name, node.kind.name, tree)
        for name, node in pipeline.stages.items()
    ]
    order = {name: i for i, name in enumerate(pipeline.order)}
    stages.sort(key=lambda s: order.get(s.name, len(order)))
    versions, source = library_versions(stages)
    return PipelineData(
        name=pipeline.name,
        spec_file=pipeline.file,
        task=str(getattr(pipeline.task, "name", pipeline.task)),
        spec=spec_view(pipeline),
        stages=stages,
        versions=versions,
        versions_source=source,
    )


def collect_stage(pipeline: str, stage: str, kind: str, tree: Tree) -> StageData:
    paths = stage_paths(pipeline, stage)
    root = paths.root.as_posix()
    data = StageData(stage, kind, dvc_stage_name(pipeline, stage), root)
    metrics = read_json(tree, paths.metrics.as_posix())
    data.metrics = metrics if isinstance(metrics, dict) else None
    plots = paths.plots.as_posix()
    history = read_json(tree, f"{plots}/history.json")
    if isinstance(history, list) and all(isinstance(r, dict) for r in history):
        data.history = history
    folders: dict[str, list[str]] = {}
    for path in tree.files(plots):
        rest = path[len(plots) + 1 :]
        if not path.lower().endswith(IMAGE_SUFFIXES):
            continue
        if "/" in rest:
            folders.setdefault(rest.rsplit("/", 1)[0], []).append(path)
            continue
        image = image_of(path, tree.read(path))
        if image is None:
            data.skipped.append(path)
        else:
            data.figures.append(image)
    for folder, files in sorted(folders.items()):
        chosen = spaced(files, MAX_GALLERY)
        images = [i for i in (image_of(p, tree.read(p)) for p in chosen) if i is not None]
        data.galleries.append(Gallery(f"{plots}/{folder}", images, len(files)))
    out = paths.out.as_posix()
    meta = read_json(tree, f"{out}/meta.json")
    if isinstance(meta, dict) and meta.get("artifact") == "dataset":
        data.dataset = meta
    data.preview = image_of(f"{out}/preview.png", tree.read(f"{out}/preview.png"))
    raw = tree.read(f"{out}/misclassified.jsonl")
    if raw is not None:
        rows = _jsonl(raw)
        data.misclassified, data.misclassified_total = rows[:MAX_EXAMPLES], len(rows)
    card = read_json(tree, f"{out}/model_card.json")
    data.card = card if isinstance(card, dict) else None
    return data


def spaced(items: Sequence[str], limit: int) -> list[str]:
    """At most `limit` items, evenly spaced, always the first and the last."""
    if len(items) <= limit:
        return list(items)
    step = (len(items) - 1) / (limit - 1)
    return [items[round(i * step)] for i in range(limit)]


def _jsonl(raw: bytes) -> list[dict[str, Any]]:
    rows = []
    for line in raw.decode("utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def library_versions(stages: Sequence[StageData]) -> tuple[dict[str, str], str]:
    """The versions a model card recorded (what trained and exported the model), else the
    installed ones (what would run it now)."""
    for stage in stages:
        versions = stage.card.get("versions") if stage.card else None
        if isinstance(versions, dict) and versions:
            return {str(k): str(v) for k, v in sorted(versions.items())}, (
                f"recorded in {stage.root}/out/model_card.json"
            )
    import platform
    from importlib import metadata

    found = {"python": platform.python_version()}
    for package in VERSION_PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return dict(sorted(found.items())), "installed now (no model card records them)"


# -- choosing pipelines ----------------------------------------------------------------------


def select_pipelines(names: Sequence[str], folder: Path = Path("pipelines")) -> list[Pipeline]:
    """The pipelines named (by name, or by spec path), else every spec in `pipelines/`.

    An unknown name is a usage error with a did-you-mean; an invalid spec among those
    chosen is a spec error (exit 2), as in `kiln validate`."""
    from torchkiln.commands.common import default_specs
    from torchkiln.schemas.spec import load_pipeline

    specs = default_specs(folder)
    chosen: list[Path] = []
    if not names:
        if not specs:
            raise UsageError(f"no specs found in {folder.as_posix()}/*.yaml; name one")
        chosen = [spec for spec in specs if not _is_abstract(spec)]
    by_name = {_pipeline_name(spec): spec for spec in specs}
    for name in names:
        path = Path(name)
        if name.endswith((".yaml", ".yml")) or path.is_file():
            if not path.is_file():
                raise UsageError(f"no spec file {name}")
            chosen.append(path)
        elif name in by_name:
            chosen.append(by_name[name])
        else:
            from torchkiln.registry.registry import did_you_mean

            known = sorted(by_name)
            raise UsageError(
                f"unknown pipeline {name!r}; {did_you_mean(name, known)}pipelines: "
                + (", ".join(known) or f"(none in {folder.as_posix()}/)")
            )
    pipelines, issues = [], []
    for spec in dict.fromkeys(chosen):
        try:
            pipeline = load_pipeline(spec)
        except SpecError as exc:
            issues.extend(exc.issues)
            continue
        if all(p.name != pipeline.name for p in pipelines):  # named twice: one section
            pipelines.append(pipeline)
    if issues:
        raise SpecError(issues)
    return pipelines


def _pipeline_name(spec: Path) -> str:
    """`name:` of a spec (never inherited through `extends:`), else its file stem."""
    data = _raw_yaml(spec)
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) else spec.stem


def _is_abstract(spec: Path) -> bool:
    data = _raw_yaml(spec)
    return isinstance(data, dict) and data.get("abstract") is True


def _raw_yaml(spec: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(spec.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None


# -- comparing revisions -----------------------------------------------------------------------


@dataclass
class RevisionData:
    """One pipeline at one revision: its params (the spec as written), metrics, curves."""

    revision: Revision
    params: dict[str, Any] | None
    #: "stage: dotted.key" -> value
    metrics: dict[str, Any]
    #: stage -> per-epoch records
    histories: dict[str, list[dict[str, Any]]]


def collect_revision(pipeline: Pipeline, revision: Revision) -> RevisionData:
    """Params, metrics and learning curves of `pipeline` at `revision` (what exists there)."""
    tree = revision.tree
    spec_path = Path(os.path.relpath(pipeline.path)).as_posix()
    raw = tree.read(spec_path)
    params = None
    if raw is not None:
        from torchkiln.schemas.yaml_source import load_yaml_text

        try:
            doc = load_yaml_text(raw.decode("utf-8", errors="replace"), spec_path)
            params = {dotted(loc): v for loc, v in flatten(doc.data) if loc}
        except SpecError:
            params = None
    metrics: dict[str, Any] = {}
    histories: dict[str, list[dict[str, Any]]] = {}
    for stage in pipeline.order:
        paths = stage_paths(pipeline.name, stage)
        found = read_json(tree, paths.metrics.as_posix())
        if isinstance(found, dict):
            for loc, value in flatten(found):
                metrics[f"{stage}: {dotted(loc)}"] = value
        history = read_json(tree, f"{paths.plots.as_posix()}/history.json")
        if isinstance(history, list) and all(isinstance(r, dict) for r in history):
            histories[stage] = history
    return RevisionData(revision, params, metrics, histories)


def workspace_revision(state: GitState) -> Revision:
    return Revision("workspace", state.head or "", "workspace")


# -- the whole report ----------------------------------------------------------------------


@dataclass
class Report:
    pipelines: list[PipelineData]
    git: GitState
    dvc: DvcState
    #: pipeline -> the workspace, then each --rev (empty without --rev)
    comparisons: dict[str, list[RevisionData]]


def collect_report(
    pipelines: Sequence[Pipeline], revisions: Sequence[Revision], state: GitState, dvc: str | None
) -> Report:
    stage_names = [dvc_stage_name(p.name, s) for p in pipelines for s in p.order]
    comparisons: dict[str, list[RevisionData]] = {}
    if revisions:
        columns = [workspace_revision(state), *revisions]
        for pipeline in pipelines:
            comparisons[pipeline.name] = [collect_revision(pipeline, r) for r in columns]
    return Report(
        pipelines=[collect_pipeline(p) for p in pipelines],
        git=state,
        dvc=dvc_state(stage_names, dvc),
        comparisons=comparisons,
    )
