"""The `gan` task: learn to generate images like the training data."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from torchkiln.registry import TaskConfig, tasks


@tasks.register
class Gan(TaskConfig):
    """Generate examples like the training data (generator/discriminator pairs)."""

    name: Literal["gan"] = "gan"
    #: `train:` and `evaluate:` mean the GAN kinds in a gan spec (no `uses:` needed).
    stage_defaults: ClassVar[dict[str, str]] = {"train": "train_gan", "evaluate": "evaluate_gan"}

    def export_target(self, model: Any, preprocess: Any, stored: Any, rebuild: Any) -> Any:
        """The generator: noise N x latent_dim -> images in [0, 1]."""
        from torchkiln.gan.export import generator_target

        return generator_target(model, preprocess, stored, rebuild)
