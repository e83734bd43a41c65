"""Classification metrics, computed from logits and targets.

Each metric's `compute` returns a flat mapping of names to numbers for metrics.json;
per-class values are nested under the class names.

They are computed here, from the confusion counts, rather than with torchmetrics:
importing torchmetrics imports torchvision and torch._dynamo, seconds of every evaluate
stage's start on a small CPU. The arithmetic is torchmetrics' own (float32 divisions of
the integer counts, zero where a denominator is zero, macro averages over the classes
that occur), so the figures are the same to the bit; tests/test_metrics.py compares them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import PositiveInt

from torchkiln.registry import MetricConfig, metrics


def _cpu(x: Any) -> Any:
    return x.detach().to("cpu")


def _counts(logits: Any, targets: Any, n: int) -> tuple[Any, Any, Any]:
    """Per-class true positives, false positives and false negatives of the top prediction."""
    import torch

    predicted = _cpu(logits).argmax(dim=1)
    targets = _cpu(targets).long()
    tp = torch.bincount(targets[predicted == targets], minlength=n)
    fp = torch.bincount(predicted, minlength=n) - tp
    fn = torch.bincount(targets, minlength=n) - tp
    return tp, fp, fn


def _divide(num: Any, denom: Any) -> Any:
    """num / denom in float32, 0 where denom is 0 (as torchmetrics divides)."""
    import torch

    num = num if num.is_floating_point() else num.float()
    denom = denom if denom.is_floating_point() else denom.float()
    return torch.where(denom != 0, num / denom, torch.zeros((), dtype=num.dtype))


def _hits_fraction(hits: Any, total: int) -> float:
    import torch

    return float(_divide(torch.tensor(int(hits)), torch.tensor(total)))


@metrics.register
class Accuracy(MetricConfig):
    """Fraction of examples whose top prediction is the label."""

    name: Literal["accuracy"] = "accuracy"

    def compute(self, logits: Any, targets: Any, classes: list[str]) -> dict[str, Any]:
        tp, _, _ = _counts(logits, targets, len(classes))
        return {"accuracy": _hits_fraction(tp.sum(), len(targets))}


@metrics.register
class F1Macro(MetricConfig):
    """F1 score averaged over classes with equal weight."""

    name: Literal["f1_macro"] = "f1_macro"

    def compute(self, logits: Any, targets: Any, classes: list[str]) -> dict[str, Any]:
        tp, fp, fn = _counts(logits, targets, len(classes))
        f1 = _divide(2.0 * tp, 2.0 * tp + 1.0 * fn + fp)
        weights = (tp + fp + fn != 0).float()  # a class that never occurs is left out
        return {"f1_macro": float(_divide(weights * f1, weights.sum(-1, keepdim=True)).sum(-1))}


@metrics.register
class PrecisionRecall(MetricConfig):
    """Precision and recall of every class."""

    name: Literal["precision_recall"] = "precision_recall"

    def compute(self, logits: Any, targets: Any, classes: list[str]) -> dict[str, Any]:
        tp, fp, fn = _counts(logits, targets, len(classes))
        precision = _divide(tp, tp + fp).tolist()
        recall = _divide(tp, tp + fn).tolist()
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
        k = min(self.k, len(classes))
        top = _cpu(logits).topk(k, dim=1).indices
        hits = (top == _cpu(targets).long().unsqueeze(1)).any(dim=1).sum()
        return {f"top_{self.k}_accuracy": _hits_fraction(hits, len(targets))}


@metrics.register
class ConfusionMatrix(MetricConfig):
    """Counts of (actual, predicted) class pairs; also written as a DVC confusion plot."""

    name: Literal["confusion_matrix"] = "confusion_matrix"

    def compute(self, logits: Any, targets: Any, classes: list[str]) -> dict[str, Any]:
        import torch

        n = len(classes)
        predicted = _cpu(logits).argmax(dim=1)
        pairs = _cpu(targets).long() * n + predicted
        matrix = torch.bincount(pairs, minlength=n * n).reshape(n, n)  # rows: actual
        return {"confusion_matrix": matrix.tolist()}
