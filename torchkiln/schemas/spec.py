"""The pipeline spec: top-level keys, per-stage configs chosen by stage kind, and the graph.

`load_pipeline(path)` validates everything it can before any stage runs and raises one
`SpecError` holding every problem, each at its line and column. It never imports torch.
"""

from __future__ import annotations

import graphlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, StringConstraints, ValidationError

from torchkiln.errors import Issue, SpecError, UsageError
from torchkiln.packs import load_builtins
from torchkiln.registry import kinds
from torchkiln.registry.component import Config, registered
from torchkiln.registry.kinds import TaskConfig
from torchkiln.registry.plugins import Plugin, PluginError, load_plugin
from torchkiln.registry.registry import UnknownNameError, choices_text, did_you_mean
from torchkiln.schemas.compose import load_spec
from torchkiln.schemas.fields import PIPELINE_NAME_PATTERN, STAGE_NAME_PATTERN, PipelineName
from torchkiln.schemas.issues import issues_from, render_value
from torchkiln.schemas.yaml_source import Loc, Source, YamlDocument
from torchkiln.stages.base import NO_FACTS, Facts, GraphFacts, StageConfig, StageKind, stage_kind

TOP_LEVEL_KEYS = (
    "name",
    "extends",
    "abstract",
    "task",
    "seed",
    "device",
    "deterministic",
    "plugins",
    "stages",
)


def _default_task() -> TaskConfig:
    return kinds.tasks.get("classification").model_validate({"name": "classification"})


class PipelineHeader(Config):
    """The top level of a spec. `stages` is validated per stage kind afterwards."""

    name: PipelineName | None = None
    """Pipeline name (default: the file's stem). Only a-z, 0-9 and _, because DVC stage
    names are `<pipeline>-<stage>`. Never inherited through `extends`."""
    extends: str | list[str] | None = None
    """Base spec(s) this one changes, relative to this file (a list applies left to right,
    this file last): mappings merge, the later file wins, lists and scalars are replaced,
    a component with another `name` replaces the whole block."""
    abstract: bool = False
    """A base for other specs to extend, not a pipeline of its own (`kiln validate` and
    `kiln dvc` check it through the specs that extend it)."""
    task: Annotated[TaskConfig, registered(kinds.tasks)] = Field(default_factory=_default_task)
    """What the pipeline learns: classification, gan, ... (`kiln list task`)."""
    seed: int = Field(0, ge=0, le=2**32 - 1)
    """Seed for every random choice: splits, initialisation, shuffling, augmentation."""
    device: Annotated[str, StringConstraints(pattern=r"^(auto|cpu|cuda(:[0-9]+)?|mps)$")] = "auto"
    """Where to compute: auto (CUDA when available), cpu, cuda, cuda:N or mps."""
    deterministic: bool = True
    """On CUDA, use only deterministic kernels, so a rerun gives the same bytes; an op that
    has none then fails, naming itself. false: allow the faster nondeterministic ones."""
    plugins: list[str] = Field(default_factory=list)
    """Modules (`my_project.models`) or .py files relative to the spec that register
    components; their source files become DVC dependencies."""
    stages: dict[
        Annotated[str, StringConstraints(pattern=STAGE_NAME_PATTERN)], dict[str, Any] | None
    ] = Field(min_length=1)
    """Stage name -> its settings. The name is the stage kind unless `uses:` says otherwise."""


@dataclass
class StageNode:
    name: str
    kind: type[StageKind]
    config: StageConfig
    #: slot -> producing stage (within this pipeline)
    inputs: dict[str, str] = field(default_factory=dict)
    #: slot -> what validation knows of that input (e.g. its modality)
    input_facts: dict[str, Facts] = field(default_factory=dict)

    def plot_specs(self) -> tuple[Any, ...]:
        return self.kind.plot_specs(self.config, self.input_facts)


@dataclass
class Pipeline:
    """A validated spec: everything `kiln run` and `kiln dvc` need."""

    name: str
    path: Path
    doc: YamlDocument
    task: TaskConfig
    seed: int
    device: str
    deterministic: bool
    plugins: list[Plugin]
    stages: dict[str, StageNode]
    order: list[str]

    @property
    def file(self) -> str:
        return self.path.as_posix()

    def sources(self) -> list[Source]:
        """The files the spec is made of: itself first, then the bases it extends."""
        return self.doc.sources or [Source(self.file, self.doc.data)]

    def canonical(self) -> dict[str, Any]:
        """The validated spec with every default filled in: what the digest covers."""
        return {
            "name": self.name,
            "task": self.task.model_dump(mode="json"),
            "seed": self.seed,
            "device": self.device,
            "deterministic": self.deterministic,
            "stages": {n: s.config.model_dump(mode="json") for n, s in self.stages.items()},
        }

    def digest(self) -> str:
        import hashlib
        import json

        blob = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


def resolve_kind(
    key: str, block: dict[str, Any], task: TaskConfig | None
) -> tuple[type[StageKind] | None, str]:
    """Stage kind for a stage: `uses:`, else the task's default for the key (a gan spec's
    `train:` is `train_gan`), else the key itself.

    Returns (kind or None, an error message when None).
    """
    uses = block.get("uses")
    if uses is not None:
        if not isinstance(uses, str):
            return None, f"must be a stage kind name (got {render_value(uses)})"
        try:
            return stage_kind(uses), ""
        except UnknownNameError as exc:
            return None, str(exc)
    if task is not None and key in task.stage_defaults:
        return stage_kind(task.stage_defaults[key]), ""
    if key in kinds.stages:
        return stage_kind(key), ""
    known = kinds.stages.names()
    return None, (
        f"no stage kind {key!r}; {did_you_mean(key, known)}name a kind with `uses:` "
        f"(stage kinds: {choices_text(known)})"
    )


def _plugins(doc: YamlDocument, spec_dir: Path, issues: list[Issue]) -> list[Plugin]:
    raw = doc.data.get("plugins", [])
    if not isinstance(raw, list):
        return []  # the header model reports the type error
    loaded = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, str):
            continue
        written = doc.written(("plugins", i))  # an inherited entry is relative to its base
        where = Path(written.file).parent if written and written.file else spec_dir
        try:
            loaded.append(load_plugin(entry, where))
        except PluginError as exc:
            issues.append(doc.issue(("plugins", i), str(exc)))
    return loaded


def _wire(
    doc: YamlDocument,
    nodes: dict[str, StageNode],
    invalid: dict[str, type[StageKind]],
    issues: list[Issue],
) -> list[str]:
    """Bind every input slot to a producer, check the graph, return a topological order.

    `invalid` holds stages whose own settings failed validation: they still count as
    producers, so one mistake is not reported again as a missing input downstream.
    """
    producers: dict[str, list[str]] = {}
    for name, kind in [*((n.name, n.kind) for n in nodes.values()), *invalid.items()]:
        producers.setdefault(kind.produces, []).append(name)
    graph: dict[str, set[str]] = {name: set() for name in nodes}
    for node in nodes.values():
        where: Loc = ("stages", node.name)
        for slot, stage in node.config.inputs.items():
            if slot not in node.kind.consumes:
                slots = sorted(node.kind.consumes)
                issues.append(
                    doc.issue(
                        (*where, "inputs", slot),
                        f"stage kind {node.kind.name!r} has no input {slot!r}; "
                        f"{did_you_mean(slot, slots)}its inputs: {', '.join(slots) or '(none)'}",
                        key=True,
                    )
                )
            elif stage in invalid:
                continue
            elif stage not in nodes:
                issues.append(
                    doc.issue(
                        (*where, "inputs", slot),
                        f"no stage {stage!r} in this pipeline; "
                        f"{did_you_mean(stage, list(nodes))}stages: {', '.join(nodes)}",
                    )
                )
            elif nodes[stage].kind.produces != node.kind.consumes[slot].artifact:
                issues.append(
                    doc.issue(
                        (*where, "inputs", slot),
                        f"stage {stage!r} produces {nodes[stage].kind.produces!r}, but input "
                        f"{slot!r} takes {node.kind.consumes[slot].artifact!r}",
                    )
                )
        for slot, spec in node.kind.consumes.items():
            chosen = node.config.inputs.get(slot)
            if chosen is not None:
                if chosen in nodes:
                    node.inputs[slot] = chosen
                    graph[node.name].add(chosen)
                continue
            candidates = [p for p in producers.get(spec.artifact, []) if p != node.name]
            if len(candidates) == 1 and candidates[0] in invalid:
                continue
            if len(candidates) == 1:
                node.inputs[slot] = candidates[0]
                graph[node.name].add(candidates[0])
            elif len(candidates) > 1:
                issues.append(
                    doc.issue(
                        where,
                        f"input {slot!r} is ambiguous: stages {', '.join(map(repr, candidates))} "
                        f"all produce {spec.artifact!r}; pick one with "
                        f"`inputs: {{{slot}: {candidates[-1]}}}`",
                        key=True,
                    )
                )
            elif not spec.optional:
                issues.append(
                    doc.issue(
                        where,
                        f"stage kind {node.kind.name!r} needs a {spec.artifact!r} input, but no "
                        f"stage in this pipeline produces one",
                        key=True,
                    )
                )
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        cycle = exc.args[1]
        issues.append(
            doc.issue(
                ("stages", cycle[0], "inputs"),
                "the stage inputs form a cycle: " + " -> ".join(reversed(cycle)),
            )
        )
        return list(nodes)
    return order


def _cross_checks(
    doc: YamlDocument,
    nodes: dict[str, StageNode],
    order: list[str],
    task: TaskConfig,
    device: str,
    issues: list[Issue],
) -> None:
    facts = GraphFacts(task=task, device=device)
    for name in order:
        node = nodes[name]
        inputs = {slot: facts.by_stage.get(src, NO_FACTS) for slot, src in node.inputs.items()}
        node.input_facts = inputs
        if node.kind.tasks is not None and task.name not in node.kind.tasks:
            issues.append(
                doc.issue(
                    ("stages", name),
                    f"stage kind {node.kind.name!r} serves task(s) "
                    f"{', '.join(sorted(node.kind.tasks))}, not {task.name!r}",
                    key=True,
                )
            )
        own = task.stage_defaults.get(node.kind.name)
        if own is not None and own != node.kind.name:  # only `uses:` can pick such a kind
            fix = f"write `uses: {own}`"
            if name == node.kind.name:
                fix += " or leave `uses:` out"
            issues.append(
                doc.issue(
                    ("stages", name, "uses"),
                    f"stage kind {node.kind.name!r} is not for {task.name} pipelines (their "
                    f"{node.kind.name} stage kind is {own!r}): {fix}",
                )
            )
            continue  # its own checks would only add follow-up errors
        for loc, message in node.kind.check(node.config, inputs, facts):
            issues.append(doc.issue(("stages", name, *loc), message))
        facts.by_stage[name] = node.kind.output_facts(node.config, inputs)


def validate_document(doc: YamlDocument, path: Path) -> Pipeline:
    """Validate a loaded spec; raise `SpecError` with every issue found."""
    load_builtins()
    issues: list[Issue] = []
    plugins = _plugins(doc, path.parent, issues)
    try:
        header = PipelineHeader.model_validate(doc.data)
    except ValidationError as exc:
        issues.extend(issues_from(exc, doc, (), PipelineHeader, doc.data))
        header = None
    task = header.task if header else None
    name = header.name if header and header.name else path.stem
    if header and header.name is None and not re.fullmatch(PIPELINE_NAME_PATTERN, name):
        issues.append(
            Issue(
                doc.file,
                1,
                1,
                "name",
                f"pipeline name {name!r} comes from the file name but may only use a-z, 0-9 "
                "and _ (DVC stage names are <pipeline>-<stage>); rename the file or set name:",
            )
        )
    nodes: dict[str, StageNode] = {}
    invalid: dict[str, type[StageKind]] = {}
    raw_stages = doc.data.get("stages")
    if isinstance(raw_stages, dict):
        for key, block in raw_stages.items():
            if not isinstance(key, str):
                continue
            block = {} if block is None else block
            if not isinstance(block, dict):
                continue  # reported by the header model
            kind, error = resolve_kind(key, block, task)
            loc: Loc = ("stages", key)
            if kind is None:
                at_uses = "uses" in block
                issues.append(doc.issue((*loc, "uses") if at_uses else loc, error, key=not at_uses))
                continue
            try:
                config = kind.config.model_validate(block)
            except ValidationError as exc:
                issues.extend(issues_from(exc, doc, loc, kind.config, block))
                invalid[key] = kind
                continue
            nodes[key] = StageNode(key, kind, config)
    order = _wire(doc, nodes, invalid, issues) if header else list(nodes)
    if header and task is not None and not issues:
        _cross_checks(doc, nodes, order, task, header.device, issues)
    if issues:
        raise SpecError(issues)
    assert header is not None and task is not None
    return Pipeline(
        name=name,
        path=path,
        doc=doc,
        task=task,
        seed=header.seed,
        device=header.device,
        deterministic=header.deterministic,
        plugins=plugins,
        stages=nodes,
        order=order,
    )


def is_abstract(doc: YamlDocument) -> bool:
    return doc.data.get("abstract") is True


def load_pipeline(path: Path) -> Pipeline:
    """Read, parse and validate the spec at `path` (a path relative to the working
    directory), with everything it extends."""
    doc = load_spec(path)
    if is_abstract(doc):
        raise UsageError(
            f"{path.as_posix()} is an abstract base (abstract: true), not a pipeline: "
            "run or compile a spec that extends it"
        )
    return validate_document(doc, path)
