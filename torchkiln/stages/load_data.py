"""load_data: read a dataset, split it (seeded, stratified), write the dataset artifact."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, model_validator

from torchkiln.registry import DatasetConfig, datasets, registered, stages
from torchkiln.registry.component import Config
from torchkiln.stages.base import Facts, StageConfig, StageKind

if TYPE_CHECKING:  # pragma: no cover
    from torchkiln.runtime.context import StageContext

Fraction = Annotated[float, Field(ge=0, lt=1)]


class SplitConfig(Config):
    """How to carve validation and test examples out of the data (seeded)."""

    val: Fraction = 0.1
    """Fraction of the examples for validation (early stopping, model selection)."""
    test: Fraction = 0.2
    """Fraction for the final test (ignored when the dataset has an official test split)."""
    stratify: bool = True
    """Keep class proportions equal across the splits."""

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> SplitConfig:
        if self.val + self.test >= 1:
            raise ValueError(
                f"val + test must leave examples to train on (got {self.val} + {self.test})"
            )
        return self


class LoadDataConfig(StageConfig):
    """Settings of a load_data stage."""

    dataset: Annotated[DatasetConfig, registered(datasets)]
    """Where the examples come from (`kiln list dataset`)."""
    split: SplitConfig = Field(default_factory=SplitConfig)
    """Train/validation/test split."""


@stages.register
class LoadData(StageKind):
    """Read a dataset and split it into train/val/test; writes data (or an index) and metadata."""

    name = "load_data"
    config = LoadDataConfig
    produces = "dataset"
    reads = ("seed", "task")

    @classmethod
    def output_facts(cls, config: Any, inputs: Mapping[str, Facts]) -> Facts:
        return Facts(modality=config.dataset.modality, has_val=config.split.val > 0)

    def run(self, ctx: StageContext) -> None:
        cfg = ctx.config
        raw = cfg.dataset.load(ctx.seed)
        raw.write(
            ctx.out_dir, dataset=cfg.dataset, split=cfg.split, seed=ctx.seed, task=ctx.task.name
        )
