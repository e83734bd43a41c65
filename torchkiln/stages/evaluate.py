"""evaluate: metrics on the test split, a confusion matrix and misclassified examples."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from torchkiln.common.metrics import Accuracy, ConfusionMatrix, F1Macro, PrecisionRecall
from torchkiln.registry import MetricConfig, kinds, registered, stages
from torchkiln.stages.base import NO_FACTS, Facts, ModelStageKind, PlotSpec, StageConfig

if TYPE_CHECKING:  # pragma: no cover
    from torchkiln.runtime.context import StageContext


class EvaluateConfig(StageConfig):
    """Settings of an evaluate stage."""

    # `kinds.metrics`, not `metrics`: annotations resolve in the class namespace, where
    # `metrics` is this field.
    metrics: Annotated[
        list[Annotated[MetricConfig, registered(kinds.metrics)]], Field(min_length=1)
    ] = Field(default_factory=lambda: [Accuracy(), F1Macro(), PrecisionRecall(), ConfusionMatrix()])
    """Metrics to compute (`kiln list metric`)."""
    split: Literal["test", "val"] = "test"
    """Which held-out split to evaluate on."""
    batch_size: Annotated[int, Field(ge=1, le=1_000_000)] = 256
    """Examples per forward pass."""
    misclassified: Annotated[int, Field(ge=0, le=256)] = 36
    """Misclassified examples to keep for review (0: none): a grid of images in
    plots/misclassified.png, or, for text, out/misclassified.jsonl."""


@stages.register
class Evaluate(ModelStageKind):
    """Score the trained model on held-out data: metrics, a confusion matrix, mistakes."""

    name = "evaluate"
    config = EvaluateConfig
    model_artifact = "trained_model"
    produces = "evaluation"
    writes_metrics = True
    plots = (
        PlotSpec(
            "confusion.json",
            x="actual",
            y=("predicted",),
            template="confusion",
            title="confusion matrix",
        ),
        PlotSpec("confusion.png"),
        PlotSpec("misclassified.png"),
    )

    @classmethod
    def plot_specs(cls, config: Any, inputs: Mapping[str, Facts]) -> tuple[PlotSpec, ...]:
        names = {m.name for m in config.metrics}
        image = (inputs.get("dataset", NO_FACTS).modality or "image") == "image"
        return tuple(
            p
            for p in cls.plots
            if (p.file.startswith("confusion") and "confusion_matrix" in names)
            or (p.file == "misclassified.png" and config.misclassified and image)
        )

    def run(self, ctx: StageContext) -> None:
        from torchkiln.runtime.evaluate import run_evaluate

        run_evaluate(ctx)
