"""augment: the train/eval transform lists and normalisation, plus a preview grid."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from torchkiln.registry import TransformConfig, registered, stages, transforms
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

TransformList = list[Annotated[TransformConfig, registered(transforms)]]


class AugmentConfig(StageConfig):
    """Settings of an augment stage."""

    train: TransformList = Field(default_factory=list)
    """Random transforms applied to each training example, in order."""
    eval: TransformList = Field(default_factory=list)
    """Deterministic transforms applied at evaluation and export."""
    normalize: bool = True
    """Standardise with the train split's per-channel mean and std."""
    preview: Annotated[int, Field(ge=0, le=256)] = 32
    """Augmented training samples in the preview grid (0: no preview)."""


@stages.register
class Augment(StageKind):
    """Data augmentation and normalisation, written as a transform spec with a preview grid."""

    name = "augment"
    config = AugmentConfig
    consumes = {"dataset": Slot("dataset")}
    produces = "transforms"
    reads = ("seed", "task")

    @classmethod
    def check(cls, config: Any, inputs: Mapping[str, Facts], facts: GraphFacts) -> Problems:
        # Its transforms, normalisation and preview are image operations: on another
        # modality the stage would be accepted and silently do nothing.
        modality = inputs.get("dataset", NO_FACTS).modality
        if not modality or modality == "image":
            return []
        return [
            (
                (),
                f"augment works on images only, and this dataset is {modality}: its transforms, "
                "normalisation and preview would do nothing; remove the stage",
            )
        ]

    def run(self, ctx: StageContext) -> None:
        from torchkiln.runtime.augment import run_augment

        run_augment(ctx)
