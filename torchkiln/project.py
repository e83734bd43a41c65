"""A set of specs validated together, including references between pipelines."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from torchkiln.deps import artifact_refs
from torchkiln.errors import Issue, KilnError, SpecError
from torchkiln.packs import load_builtins
from torchkiln.registry.plugins import PluginError, load_plugin
from torchkiln.registry.registry import did_you_mean
from torchkiln.schemas.compose import load_spec
from torchkiln.schemas.spec import Pipeline, is_abstract, validate_document


def load_project(
    specs: Iterable[Path], *, collect: bool = False, abstract: list[Path] | None = None
) -> tuple[dict[str, Pipeline], list[Issue]]:
    """Validate `specs`; also check that pipeline names are unique and cross-pipeline
    references (`weights: {pipeline: p, stage: s}`) point at a pipeline and stage among them.
    Abstract bases are not pipelines: they are skipped (and listed in `abstract` when given),
    and validated through the specs that extend them.

    With `collect`, return the issues instead of raising `SpecError`.
    """
    issues: list[Issue] = []
    pipelines: dict[str, Pipeline] = {}
    for spec in specs:
        try:
            doc = load_spec(spec)
            if is_abstract(doc):
                if abstract is not None:
                    abstract.append(spec)
                continue
            pipeline = validate_document(doc, spec)
        except SpecError as exc:
            issues.extend(exc.issues)
            continue
        except KilnError as exc:  # unreadable file: report it like a spec issue, at 1:1
            issues.append(Issue(spec.as_posix(), 1, 1, "", str(exc).removeprefix(f"{spec}: ")))
            continue
        if pipeline.name in pipelines:
            other = pipelines[pipeline.name].file
            issues.append(
                pipeline.doc.issue(
                    ("name",),
                    f"pipeline name {pipeline.name!r} is also used by "
                    f"{other}; names must be unique",
                )
            )
            continue
        pipelines[pipeline.name] = pipeline
    issues.extend(cross_reference_issues(pipelines))
    if issues and not collect:
        raise SpecError(issues)
    return pipelines, issues


def cross_reference_issues(pipelines: dict[str, Pipeline]) -> list[Issue]:
    """References to other pipelines' outputs must name a known pipeline and stage.

    Only checked when the referenced pipeline is part of the set (validating one spec
    alone cannot know about the others).
    """
    issues = []
    all_names = list(pipelines)
    for pipeline in pipelines.values():
        for stage, node in pipeline.stages.items():
            for loc, ref in artifact_refs(node.config):
                where = ("stages", stage, *loc)
                target = pipelines.get(ref.pipeline)
                if target is None:
                    if len(pipelines) > 1:
                        issues.append(
                            pipeline.doc.issue(
                                (*where, "pipeline"),
                                f"no pipeline {ref.pipeline!r}; "
                                f"{did_you_mean(ref.pipeline, all_names)}"
                                f"pipelines: {', '.join(all_names)}",
                            )
                        )
                elif ref.stage not in target.stages:
                    names = list(target.stages)
                    issues.append(
                        pipeline.doc.issue(
                            (*where, "stage"),
                            f"pipeline {ref.pipeline!r} has no stage {ref.stage!r}; "
                            f"{did_you_mean(ref.stage, names)}its stages: {', '.join(names)}",
                        )
                    )
                elif ref.pipeline == pipeline.name:
                    issues.append(
                        pipeline.doc.issue(
                            (*where, "pipeline"),
                            "a stage cannot use its own pipeline's output this way; use `inputs:`",
                        )
                    )
    return issues


def load_plugins_of(specs: Iterable[Path]) -> None:
    """Import built-ins and the plugins the given specs name (best effort, for list/schema)."""
    load_builtins()
    for spec in specs:
        try:
            doc = load_spec(spec)
        except KilnError:
            continue
        entries = doc.data.get("plugins")
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            if isinstance(entry, str):
                written = doc.written(("plugins", i))
                where = Path(written.file).parent if written and written.file else spec.parent
                try:
                    load_plugin(entry, where)
                except PluginError:
                    continue
