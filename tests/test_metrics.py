"""torchkiln's classification metrics against torchmetrics, the reference they replace
(to keep torchvision and torch._dynamo out of the evaluate stage): the same figures, to
the bit, on random cases with ties, absent classes and k beyond the class count."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torchmetrics.functional import classification as reference

from torchkiln.common.metrics import Accuracy, ConfusionMatrix, F1Macro, PrecisionRecall, TopK


def _cases() -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    generator = torch.Generator().manual_seed(0)
    cases = []
    for n_classes, n in [(2, 1), (3, 7), (5, 64), (10, 333), (7, 50)]:
        logits = torch.randn(n, n_classes, generator=generator)
        targets = torch.randint(0, n_classes, (n,), generator=generator)
        cases.append((logits, targets, n_classes))
    ties = torch.zeros(20, 4)  # every class tied: argmax's choice decides
    ties[::3, 2] = 1.0
    cases.append((ties, torch.randint(0, 4, (20,), generator=generator), 4))
    absent = torch.randn(30, 6, generator=generator)  # classes 4 and 5 never occur
    cases.append((absent, torch.randint(0, 4, (30,), generator=generator), 6))
    return cases


@pytest.mark.parametrize("case", range(len(_cases())))
def test_figures_are_torchmetrics_own_to_the_bit(case: int) -> None:
    logits, targets, n = _cases()[case]
    classes = [f"c{i}" for i in range(n)]
    assert Accuracy().compute(logits, targets, classes)["accuracy"] == float(
        reference.multiclass_accuracy(logits, targets, num_classes=n, average="micro")
    )
    assert F1Macro().compute(logits, targets, classes)["f1_macro"] == float(
        reference.multiclass_f1_score(logits, targets, num_classes=n, average="macro")
    )
    per_class = PrecisionRecall().compute(logits, targets, classes)["per_class"]
    precision = reference.multiclass_precision(logits, targets, num_classes=n, average=None)
    recall = reference.multiclass_recall(logits, targets, num_classes=n, average=None)
    for c, p, r in zip(classes, precision.tolist(), recall.tolist(), strict=True):
        assert per_class[c] == {"precision": round(p, 6), "recall": round(r, 6)}
    for k in (2, 3, 12):
        expected = reference.multiclass_accuracy(
            logits, targets, num_classes=n, average="micro", top_k=min(k, n)
        )
        assert TopK(k=k).compute(logits, targets, classes)[f"top_{k}_accuracy"] == float(expected)
    matrix = reference.multiclass_confusion_matrix(logits, targets, num_classes=n)
    assert ConfusionMatrix().compute(logits, targets, classes)["confusion_matrix"] == (
        matrix.tolist()
    )


def test_computing_metrics_imports_neither_torchmetrics_nor_torchvision() -> None:
    code = (
        "import sys, torch\n"
        "from torchkiln.common.metrics import Accuracy, F1Macro, TopK, ConfusionMatrix\n"
        "x, y = torch.randn(8, 3), torch.randint(0, 3, (8,))\n"
        "for m in (Accuracy(), F1Macro(), TopK(k=2), ConfusionMatrix()):\n"
        "    m.compute(x, y, ['a', 'b', 'c'])\n"
        "print(sorted(m for m in ('torchmetrics', 'torchvision') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
