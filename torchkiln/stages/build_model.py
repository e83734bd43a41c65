"""build_model: build the architecture, optionally load weights and freeze parts of it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, model_validator

from torchkiln.registry import ModelConfig, models, registered, stages
from torchkiln.registry.component import Config
from torchkiln.schemas.fields import ArtifactRef, LocalPath, PipelineName, StageName
from torchkiln.stages.base import (
    NO_FACTS,
    Facts,
    GraphFacts,
    Problems,
    Slot,
    StageConfig,
    StageKind,
)

if TYPE_CHECKING:  # pragma: no cover
    from torchkiln.runtime.context import StageContext


class WeightsConfig(Config):
    """Initial weights: a local file, or another pipeline's stage output."""

    path: LocalPath | None = None
    """A .safetensors or .pt/.pth state_dict file (relative to the repository root)."""
    pipeline: PipelineName | None = None
    """Take the weights of this pipeline's `stage` (a DVC dependency on its output)."""
    stage: StageName | None = None
    """Stage of `pipeline` whose weights to take (a build_model, train or export stage)."""
    strict: bool = True
    """Every key must match; false loads what matches and reports the rest."""
    exclude: list[str] = Field(default_factory=list)
    """Patterns of weight names not to load (fnmatch, e.g. `head.*` for a new label set)."""

    @model_validator(mode="after")
    def _one_source(self) -> WeightsConfig:
        if (self.path is None) == (self.pipeline is None):
            raise ValueError("give either `path:` or `pipeline:` with `stage:`")
        if (self.pipeline is None) != (self.stage is None):
            raise ValueError("`pipeline:` and `stage:` go together")
        return self

    def artifact_ref(self) -> ArtifactRef | None:
        if self.pipeline is None or self.stage is None:
            return None
        return ArtifactRef(pipeline=self.pipeline, stage=self.stage)


class BuildModelConfig(StageConfig):
    """Settings of a build_model stage."""

    model: Annotated[ModelConfig, registered(models)]
    """The architecture (`kiln list model`)."""
    weights: WeightsConfig | None = None
    """Initial weights (default: seeded random initialisation)."""
    freeze: list[str] = Field(default_factory=list)
    """Parameter-name patterns (fnmatch, e.g. `features.*`) excluded from training."""


@stages.register
class BuildModel(StageKind):
    """Build the model for the dataset (classes, input shape); writes weights and a summary."""

    name = "build_model"
    config = BuildModelConfig
    consumes = {"dataset": Slot("dataset")}
    produces = "model"
    reads = ("seed", "task")

    @classmethod
    def check(cls, config: Any, inputs: Mapping[str, Facts], facts: GraphFacts) -> Problems:
        model = config.model
        problems: Problems = []
        modality = inputs.get("dataset", NO_FACTS).modality
        if modality and modality not in model.modalities:
            problems.append(
                (
                    ("model", "name"),
                    f"model {model.name!r} takes {'/'.join(sorted(model.modalities))} inputs, "
                    f"but the dataset is {modality}",
                )
            )
        if facts.task.name not in model.tasks:
            problems.append(
                (
                    ("model", "name"),
                    f"model {model.name!r} serves {', '.join(sorted(model.tasks))}, "
                    f"not task {facts.task.name!r}",
                )
            )
        return problems

    @classmethod
    def output_facts(cls, config: Any, inputs: Mapping[str, Facts]) -> Facts:
        return dataclasses.replace(inputs.get("dataset", NO_FACTS), model=config.model.name)

    def run(self, ctx: StageContext) -> None:
        from torchkiln.runtime.build_model import run_build_model

        run_build_model(ctx)
