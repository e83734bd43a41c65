"""evaluate at run time: score the trained model on a held-out split; write metrics and plots."""

from __future__ import annotations

import io
from typing import Any

import torch

from torchkiln.errors import RunError
from torchkiln.io import atomic_write_bytes, atomic_write_text, write_json
from torchkiln.runtime.context import StageContext
from torchkiln.runtime.datasets import open_dataset
from torchkiln.runtime.device import resolve_device
from torchkiln.runtime.loop import chunks, iterate_batches, materialized, to_device
from torchkiln.runtime.model_artifact import open_model
from torchkiln.runtime.preprocess import preprocessor_for
from torchkiln.runtime.progress import log


@torch.no_grad()
def predict_split(
    model: Any, split: Any, preprocess: Any, device: torch.device, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (float32, CPU) and targets for every example of a split, in order."""
    model.eval()
    logits, targets = [], []
    for batch in iterate_batches(split, chunks(torch.arange(len(split)), batch_size)):
        inputs, y = to_device(batch, device)
        logits.append(model(*preprocess.eval_inputs(inputs)).float().cpu())
        targets.append(y.cpu())
    return torch.cat(logits), torch.cat(targets)


def confusion_png(matrix: list[list[int]], classes: list[str], path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(classes)
    size = min(12, 2 + 0.6 * n)
    fig, ax = plt.subplots(figsize=(size, size), dpi=100)
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    peak = max(max(row) for row in matrix) or 1
    for i in range(n):
        for j in range(n):
            color = "white" if matrix[i][j] > peak / 2 else "black"
            ax.text(j, i, str(matrix[i][j]), ha="center", va="center", color=color, fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def run_evaluate(ctx: StageContext) -> None:
    cfg = ctx.config
    device = resolve_device(ctx.device, deterministic=ctx.deterministic)
    data = open_dataset(ctx.input("dataset"))
    info = data.info
    if data.count(cfg.split) == 0:
        raise RunError(f"the {cfg.split} split is empty; give load_data's split.{cfg.split} > 0")
    split = materialized(data.split(cfg.split))
    model = open_model(ctx.input("model")).build().to(device)
    preprocess = preprocessor_for(info, ctx.optional_input("transforms")).to(device)
    logits, targets = predict_split(model, split, preprocess, device, cfg.batch_size)
    classes = list(info.classes)
    results: dict[str, Any] = {"split": cfg.split, "examples": len(targets)}
    for metric in cfg.metrics:
        results.update(metric.compute(logits, targets, classes))
    matrix = results.pop("confusion_matrix", None)
    predicted = logits.argmax(dim=1)
    ctx.plots_dir.mkdir(parents=True, exist_ok=True)
    if matrix is not None:
        write_json(
            ctx.plots_dir / "confusion.json",
            [
                {"actual": classes[int(a)], "predicted": classes[int(p)]}
                for a, p in zip(targets.tolist(), predicted.tolist(), strict=True)
            ],
        )
        confusion_png(matrix, classes, ctx.plots_dir / "confusion.png")
    wrong = (predicted != targets).nonzero().flatten()
    # The modality's preprocessor decides how mistakes are shown (images: a PNG grid in
    # plots/, text: a JSONL file in out/); the stage's plot_specs declares the plot files.
    if cfg.misclassified:
        preprocess.write_mistakes(
            split,
            wrong[: cfg.misclassified],
            predicted,
            classes,
            out_dir=ctx.out_dir,
            plots_dir=ctx.plots_dir,
        )
    confidence = logits.softmax(dim=1).max(dim=1).values
    rows = ["index,actual,predicted,confidence"] + [
        f"{i},{classes[int(a)]},{classes[int(p)]},{c:.6f}"
        for i, (a, p, c) in enumerate(
            zip(targets.tolist(), predicted.tolist(), confidence.tolist(), strict=True)
        )
    ]
    atomic_write_text(ctx.out_dir / "predictions.csv", "\n".join(rows) + "\n")
    write_json(ctx.out_dir / "metrics.json", results)
    # `dvc metrics show` gets the headline numbers; per-class values stay in out/metrics.json.
    write_json(ctx.metrics_path, {k: v for k, v in results.items() if not isinstance(v, dict)})
    shown = ", ".join(f"{k} {v:.4f}" for k, v in results.items() if isinstance(v, float))
    log(f"{cfg.split} ({len(targets)} examples): {shown}; {len(wrong)} misclassified")
