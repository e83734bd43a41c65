"""Classification metrics, computed with torchmetrics from logits and targets.

Each metric's `compute` returns a flat mapping of names to numbers for metrics.json;
per-class values are nested under the class names.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import PositiveInt

from torchkiln.registry import MetricConfig, metrics


def _cpu(x: Any) -> Any:
    return x.detach().to("cpu")


@metrics.register
class Accuracy(MetricConfig):
    """Fraction of examples whose top prediction is the label."""

    name: Literal["accuracy"] = "accuracy"

    def compute(self, logits: Any, targets: Any, classes: list[str]) -> dict[str, Any]:
        from torchmetrics.functional.classification import multiclass_accuracy

        value = multiclass_accuracy(
            _cpu(logits), _cpu(targets), num_classes=len(classes), average="micro"
        )
        return {"accuracy": float(value)}


@metrics.register
class F1Macro(MetricConfig):
    """F1 score averaged over classes with equal weight."""

    name: Literal["f1_macro"] = "f1_macro"

    def compute(self, logits: Any, targets: Any, classes: list[str]) -> dict[str, Any]:
        from torchmetrics.functional.classification import multiclass_f1_score

        value = multiclass_f1_score(
            _cpu(logits), _cpu(targets), num_classes=len(classes), average="macro"
        )
        return {"f1_macro": float(value)}


@metrics.register
class PrecisionRecall(MetricConfig):
    """Precision and recall of every class."""

    name: Literal["precision_recall"] = "precision_recall"

    def compute(self, logits: Any, targets: Any, classes: list[str]) -> dict[str, Any]:
        from torchmetrics.functional.classification import (
            multiclass_precision,
            multiclass_recall,
        )

        args = (_cpu(logits), _cpu(targets))
        n = len(classes)
        precision = multiclass_precision(*args, num_classes=n, average=None).tolist()
        recall = multiclass_recall(*args, num_classes=n, average=None).tolist()
        return {
            "per_class": {
                c: {"precision": round(p, 6), "recall": round(r, 6)}
                for c, p, r in zip(classes, precision, recall, strict=True)
            }
        }


@metrics.register
class TopK(MetricConfig):
    """Fraction of examples whose label is among the k highest-scored classes."""

    name: Literal["top_k"] = "top_k"
    k: PositiveInt = 5
    """How many top predictions count (capped at the number of classes)."""

    def compute(self, logits: Any, targets: Any, classes: list[str]) -> dict[str, Any]:
        from torchmetrics.functional.classification import multiclass_accuracy

        k = min(self.k, len(classes))
        value = multiclass_accuracy(
            _cpu(logits), _cpu(targets), num_classes=len(classes), average="micro", top_k=k
        )
        return {f"top_{self.k}_accuracy": float(value)}


@metrics.register
class ConfusionMatrix(MetricConfig):
    """Counts of (actual, predicted) class pairs; also written as a DVC confusion plot."""

    name: Literal["confusion_matrix"] = "confusion_matrix"

    def compute(self, logits: Any, targets: Any, classes: list[str]) -> dict[str, Any]:
        from torchmetrics.functional.classification import multiclass_confusion_matrix

        matrix = multiclass_confusion_matrix(_cpu(logits), _cpu(targets), num_classes=len(classes))
        return {"confusion_matrix": matrix.tolist()}
