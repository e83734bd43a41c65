"""What the export stage exports for a GAN: the generator, noise in, viewable images out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from torchkiln.runtime.exporting import ExportTarget

NOISE_SEED = 1234

USAGE = {
    "prepare": "noise = torch.randn(64, {latent_dim})     # images: float32 in [0, 1], N x {shape}",
    "footer": "# or, in the project: kiln sample pipelines/<spec>.yaml -n 64 -o grid.png",
}


class GeneratorModule(nn.Module):
    """noise (N x latent_dim, standard normal) -> images in [0, 1] (N x C x H x W).

    The generator already works in [0, 1] pixel space (the discriminator's normalisation is
    applied outside it during training), so nothing is left to undo; the clamp guards
    generators whose last layer is unbounded."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        return self.generator(noise).clamp(0.0, 1.0)


def generator_target(
    model: nn.Module,
    preprocess: Any,
    stored: tuple[torch.Tensor, ...],
    rebuild: Callable[[dict[str, torch.Tensor]], nn.Module],
) -> ExportTarget:
    """The export target of a GAN model: its generator (the EMA one when train_gan kept an
    average: the artifact's generator weights are then the averaged ones)."""
    from torchkiln.runtime.model_artifact import state_for_saving

    latent_dim = int(model.latent_dim)
    shape = [int(v) for v in model.image_shape]
    batch = max(2, int(stored[0].shape[0]))
    noise = torch.randn(batch, latent_dim, generator=torch.Generator().manual_seed(NOISE_SEED))
    shown = " x ".join(map(str, shape))
    return ExportTarget(
        module=GeneratorModule(model.generator).eval(),
        example=(noise,),
        input_names=["noise"],
        dynamic_axes={"noise": {0: "batch"}},
        output_names=["images"],
        rebuild=lambda state: GeneratorModule(rebuild(state).generator).eval(),
        # the whole pair, so model.json + model.safetensors rebuild the model as trained
        weights=state_for_saving(model),
        card={
            "latent_dim": latent_dim,
            "output_shape": shape,
            "classes": [],
            "input": {
                "input": f"float32 noise from a standard normal, N x {latent_dim}",
                "shape": [latent_dim],
                "modality": "noise",
                "usage": {
                    key: text.format(latent_dim=latent_dim, shape=shown)
                    for key, text in USAGE.items()
                },
            },
            "output": f"float32 in [0, 1], N x {shown}",
        },
    )
