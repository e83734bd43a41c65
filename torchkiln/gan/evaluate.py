"""evaluate_gan at run time: scores in a classifier's feature space, on a visible scale.

Three image sets are scored against the same reference (the train split the GAN learned
from): generated images, held-out real images (the best a generator could do at this
sample size) and uniform noise (the worst). Every set goes through the same path: uint8
images, as a saved PNG would hold them, then the classifier's own preprocessing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from torchkiln.errors import RunError
from torchkiln.gan.losses import gan_losses
from torchkiln.gan.metrics import (
    FeatureTap,
    class_diversity,
    class_shares,
    classifier_score,
    divergence,
    feature_spread,
    frechet_distance,
    mode_collapse,
)
from torchkiln.io import read_json, write_json
from torchkiln.runtime.context import StageContext
from torchkiln.runtime.datasets import open_dataset
from torchkiln.runtime.device import resolve_device
from torchkiln.runtime.images import save_grid, to_uint8
from torchkiln.runtime.loop import chunks, iterate_batches, materialized
from torchkiln.runtime.model_artifact import open_model
from torchkiln.runtime.preprocess import preprocessor_for
from torchkiln.runtime.progress import log

SETS = ("generated", "real", "noise")


class Classifier:
    """Another pipeline's trained classifier: features and class probabilities of uint8 images."""

    def __init__(self, ref: Any, transforms_ref: Any, device: torch.device, logits: bool) -> None:
        folder = Path(ref.path())
        if not (folder / "model.json").exists():
            raise RunError(
                f"evaluate_gan's classifier {folder.as_posix()} does not exist yet; run "
                f"`kiln run pipelines/{ref.pipeline}.yaml --stage {ref.stage}` (or dvc repro) first"
            )
        artifact = open_model(folder)
        self.info = artifact.info
        self.where = folder.as_posix()
        self.model = artifact.build().to(device).eval()
        transforms = Path(transforms_ref.path()) if transforms_ref is not None else None
        self.preprocess = preprocessor_for(self.info, transforms).to(device)
        self.tap = FeatureTap(self.model, use_logits=logits)
        self.device = device

    @torch.no_grad()
    def score(self, batches: Iterator[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, probabilities) of uint8 image batches, float64 on the CPU."""
        features, probabilities = [], []
        for images in batches:
            inputs = self.preprocess.eval_inputs((images.to(self.device),))
            logits = self.model(*inputs)
            features.append(self.tap(logits).double().cpu())
            probabilities.append(logits.double().softmax(dim=1).cpu())
        return torch.cat(features), torch.cat(probabilities)


def _real_batches(split: Any, batch_size: int) -> Iterator[torch.Tensor]:
    for inputs, _ in iterate_batches(split, chunks(torch.arange(len(split)), batch_size)):
        yield inputs[0]


def _generated_batches(
    generator: torch.nn.Module, latent_dim: int, count: int, batch_size: int, seed: int, device: Any
) -> Iterator[torch.Tensor]:
    noise = torch.randn(count, latent_dim, generator=torch.Generator().manual_seed(seed + 777))
    with torch.no_grad():
        for z in noise.split(batch_size):
            yield to_uint8(generator(z.to(device)).float().cpu())


def _noise_batches(
    shape: tuple[int, ...], count: int, batch_size: int, seed: int
) -> Iterator[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed + 555)
    for start in range(0, count, batch_size):
        n = min(batch_size, count - start)
        yield torch.randint(0, 256, (n, *shape), generator=gen, dtype=torch.uint8)


def _history_warnings(model_dir: Path, meta: dict[str, Any], checks: Any) -> list[str]:
    """Divergence from the training history the trained model carries (train_gan writes it)."""
    path = model_dir / "history.json"
    if not path.exists():
        log("the model carries no training history: divergence not checked")
        return []
    raw = (meta.get("training") or {}).get("loss") or {}
    minimum = 0.0
    if raw.get("name") in gan_losses:
        loss = gan_losses.get(raw["name"]).model_validate(raw)
        if not loss.divergence_check:
            return []  # e.g. a WGAN critic loss has no floor to fall to
        minimum = loss.d_loss_minimum()
    return divergence(
        read_json(path),
        d_loss_floor=minimum + checks.d_loss_floor,
        g_loss_rise=checks.g_loss_rise,
        window=checks.window,
    )


def run_evaluate_gan(ctx: StageContext) -> None:
    cfg = ctx.config
    device = resolve_device(ctx.device, deterministic=ctx.deterministic)
    data = open_dataset(ctx.input("dataset"))
    info = data.info
    if data.count(cfg.split) < 2:
        raise RunError(
            f"evaluate_gan compares with held-out real images, but the {cfg.split} split has "
            f"{data.count(cfg.split)}; give load_data's split.{cfg.split} > 0"
        )
    artifact = open_model(ctx.input("model"))
    gan = artifact.build().to(device).eval()
    classifier = Classifier(
        cfg.classifier, cfg.classifier_transforms, device, cfg.features == "logits"
    )
    if tuple(classifier.info.input_shape) != tuple(info.input_shape):
        raise RunError(
            f"the classifier {classifier.where} takes {tuple(classifier.info.input_shape)} "
            f"images, but this dataset's are {tuple(info.input_shape)}"
        )
    held_out = materialized(data.split(cfg.split))
    count = cfg.samples or len(held_out)
    bs = cfg.batch_size
    reference, _ = classifier.score(_real_batches(materialized(data.split("train")), bs))
    scored = {
        "real": classifier.score(_real_batches(held_out, bs)),
        "generated": classifier.score(
            _generated_batches(gan.generator, int(gan.latent_dim), count, bs, ctx.seed, device)
        ),
        "noise": classifier.score(_noise_batches(tuple(info.input_shape), count, bs, ctx.seed)),
    }
    num_classes = classifier.info.num_classes
    results: dict[str, Any] = {
        "samples": count,
        "held_out_split": cfg.split,
        "held_out": len(held_out),
        "reference_images": int(reference.shape[0]),
        "feature_dim": int(reference.shape[1]),
    }
    for name in SETS:
        features, probabilities = scored[name]
        predicted = probabilities.argmax(dim=1)
        results[f"fid_{name}"] = frechet_distance(features, reference)
        results[f"diversity_{name}"] = class_diversity(predicted, num_classes)
        results[f"classifier_score_{name}"] = classifier_score(probabilities)
    spread = {name: feature_spread(scored[name][0]) for name in ("generated", "real")}
    results["spread_ratio"] = spread["generated"] / spread["real"] if spread["real"] else 0.0
    scale = results["fid_noise"] - results["fid_real"]
    # 0: as close to the training images as held-out real ones; 1: as far as noise
    results["fid_scaled"] = (
        (results["fid_generated"] - results["fid_real"]) / scale if scale else 0.0
    )
    checks = cfg.checks
    collapse = mode_collapse(
        results["diversity_generated"],
        results["diversity_real"],
        spread["generated"],
        spread["real"],
        diversity_ratio=checks.diversity_ratio,
        spread_ratio=checks.spread_ratio,
    )
    diverged = _history_warnings(ctx.input("model"), artifact.meta, checks)
    results["mode_collapse"] = bool(collapse)
    results["divergence"] = bool(diverged)
    results["warnings"] = collapse + diverged
    results["features"] = classifier.tap.layer
    classifier.tap.close()

    ctx.plots_dir.mkdir(parents=True, exist_ok=True)
    shares = {n: class_shares(scored[n][1].argmax(dim=1), num_classes) for n in SETS}
    write_json(
        ctx.plots_dir / "classes.json",
        [
            {
                "class": c,
                "generated": round(float(shares["generated"][i]), 6),
                "real": round(float(shares["real"][i]), 6),
            }
            for i, c in enumerate(classifier.info.classes)
        ],
    )
    if cfg.grid:
        images = torch.cat(
            list(
                _generated_batches(
                    gan.generator, int(gan.latent_dim), cfg.grid, bs, ctx.seed, device
                )
            )
        )
        save_grid(images, ctx.plots_dir / "samples.png")
    results = {k: round(v, 6) if isinstance(v, float) else v for k, v in results.items()}
    write_json(ctx.out_dir / "metrics.json", results)
    write_json(ctx.metrics_path, results)
    log(
        f"Fréchet distance to the train images: generated {results['fid_generated']:.2f}, "
        f"held-out real {results['fid_real']:.2f}, noise {results['fid_noise']:.2f}; "
        f"class diversity: generated {results['diversity_generated']:.3f}, "
        f"real {results['diversity_real']:.3f}, noise {results['diversity_noise']:.3f}"
    )
    for warning in results["warnings"]:
        log(f"warning: {warning}")
