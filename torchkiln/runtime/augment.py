"""augment at run time: write the transform spec, check it keeps the image shape, preview it."""

from __future__ import annotations

import torch

from torchkiln.errors import RunError
from torchkiln.io import write_json
from torchkiln.runtime.context import StageContext
from torchkiln.runtime.datasets import open_dataset
from torchkiln.runtime.images import save_grid
from torchkiln.runtime.preprocess import preprocessor_for


def run_augment(ctx: StageContext) -> None:
    cfg = ctx.config
    data = open_dataset(ctx.input("dataset"))
    info = data.info
    write_json(
        ctx.out_dir / "transforms.json",
        {
            "artifact": "transforms",
            "modality": info.modality,
            "train": [t.model_dump(mode="json") for t in cfg.train],
            "eval": [t.model_dump(mode="json") for t in cfg.eval],
            "normalize": {"mean": list(info.mean), "std": list(info.std)}
            if cfg.normalize
            else None,
        },
    )
    if info.modality != "image":
        return
    pre = preprocessor_for(info, ctx.out_dir)
    train = data.split("train")
    count = min(max(cfg.preview, 1), len(train))
    index = torch.randperm(len(train), generator=torch.Generator().manual_seed(ctx.seed))[:count]
    images = train.batch(index)[0][0]
    augmented = torch.stack([pre.augment_image(img) for img in images])
    evaluated = pre.eval_module(images.float() / 255.0)
    for what, result in (("train", augmented), ("eval", evaluated)):
        if tuple(result.shape[1:]) != tuple(images.shape[1:]):
            raise RunError(
                f"the {what} transforms turn {tuple(images.shape[1:])} images into "
                f"{tuple(result.shape[1:])}; transforms must keep the image shape (resize with "
                "the dataset's `image_size:` instead)"
            )
    if cfg.preview:
        save_grid(augmented, ctx.out_dir / "preview.png")
