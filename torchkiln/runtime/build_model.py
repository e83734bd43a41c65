"""build_model at run time: build, load initial weights, freeze, write weights and a summary."""

from __future__ import annotations

from pathlib import Path

from torchkiln.io import atomic_write_text, write_json
from torchkiln.runtime.context import StageContext
from torchkiln.runtime.datasets import open_dataset
from torchkiln.runtime.model_artifact import (
    freeze,
    load_weights,
    read_state_dict,
    state_for_saving,
    write_model,
)
from torchkiln.runtime.progress import log


def run_build_model(ctx: StageContext) -> None:
    cfg = ctx.config
    dataset = open_dataset(ctx.input("dataset"))
    info = dataset.info
    module = cfg.model.build(info)
    # Initialisation from files the model config names (e.g. pretrained word vectors):
    # done once here, so the result lives in the weights and later stages never reread it.
    initialization = cfg.model.initialize(module, dataset)
    report = None
    if cfg.weights is not None:
        ref = cfg.weights.artifact_ref()
        source = Path(ref.path()) if ref else Path(cfg.weights.path)
        report = load_weights(
            module, read_state_dict(source), strict=cfg.weights.strict, exclude=cfg.weights.exclude
        )
        log(
            f"loaded {len(report['loaded'])} weight tensors from {source.as_posix()}"
            + "".join(
                f"; {len(report[k])} {k.replace('_', ' ')}"
                for k in ("missing", "unexpected", "shape_mismatch", "excluded")
                if report[k]
            )
        )
    frozen = freeze(module, cfg.freeze)
    # What build/initialize froze themselves (e.g. `pretrained: {freeze: true}`) counts too.
    frozen = sorted({*frozen, *(n for n, p in module.named_parameters() if not p.requires_grad)})
    params = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    write_model(
        ctx.out_dir,
        config=cfg.model,
        info=info,
        state=state_for_saving(module),
        frozen=frozen,
        extra={
            "weights_report": report,
            **({"initialization": initialization} if initialization else {}),
        },
    )
    write_json(
        ctx.out_dir / "summary.json",
        {
            "parameters": params,
            "trainable_parameters": trainable,
            "frozen_parameters": frozen,
            **({"initialization": initialization} if initialization else {}),
        },
    )
    atomic_write_text(
        ctx.out_dir / "summary.txt",
        f"{module}\n\nparameters: {params:,}\ntrainable parameters: {trainable:,}\n",
    )
    log(f"{cfg.model.name}: {params:,} parameters, {trainable:,} trainable")
