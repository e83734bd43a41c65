"""From stored examples to model inputs: the `Preprocessor` of each modality.

A modality's preprocessor (declared with `data.formats.register_preprocessor`) turns a
batch as the dataset artifact stores it into what the model takes, for training (with
augmentation) and for evaluation and export (without), and says what an exported model
needs around it.

Images: training batches stay uint8 through the random transforms (cheap, and what v2
expects), then become float and are normalised on the compute device. Evaluation and
export share one module, `ImageEvalModule`, so the exported file computes exactly what
evaluate scored.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchkiln.data.info import DatasetInfo
from torchkiln.errors import RunError
from torchkiln.io import read_json
from torchkiln.registry import kinds
from torchkiln.runtime.exporting import ExportTarget

Rebuild = Callable[[dict[str, torch.Tensor]], nn.Module]


class Preprocessor(ABC):
    """A modality's path from stored batches to model inputs (and around exported models)."""

    @abstractmethod
    def to(self, device: torch.device | str) -> Preprocessor:
        """Move what it computes with (statistics, modules) to `device`; returns itself."""

    @abstractmethod
    def train_inputs(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """A training batch's model inputs: random augmentation included."""

    @abstractmethod
    def eval_inputs(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """An evaluation batch's model inputs: deterministic, what the exported model does."""

    @abstractmethod
    def export_target(
        self, model: nn.Module, stored: tuple[torch.Tensor, ...], rebuild: Rebuild
    ) -> ExportTarget:
        """What the export stage writes: the model behind this preprocessing, with an
        example batch built from `stored` (a batch as the dataset artifact holds it)."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """The model card's account of the exported model's input (`input`, ...)."""

    def export_files(self, dataset_dir: Path, out_dir: Path) -> list[str]:
        """Copy into the export folder what it needs to feed the model (a text model's
        vocabulary); returns the file names. None by default."""
        return []

    def write_mistakes(
        self,
        split: Any,
        wrong: torch.Tensor,
        predicted: torch.Tensor,
        classes: list[str],
        out_dir: Path,
        plots_dir: Path,
    ) -> None:
        """Write evaluate's misclassified examples (`wrong`: their indices in `split`) for
        review, in the modality's own form. Nothing by default; the evaluate kind's
        `plot_specs` must declare any plot file this writes."""
        return None


class ImageEvalModule(nn.Module):
    """float images in [0, 1] (N x C x H x W) -> eval transforms -> normalised."""

    def __init__(
        self,
        transforms: Sequence[nn.Module],
        mean: Sequence[float] | None,
        std: Sequence[float] | None,
    ) -> None:
        super().__init__()
        self.transforms = nn.Sequential(*transforms)
        self.normalize = mean is not None
        shape = (1, -1, 1, 1)
        self.register_buffer("mean", torch.tensor(mean or [0.0]).reshape(shape), persistent=False)
        self.register_buffer("std", torch.tensor(std or [1.0]).reshape(shape), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.transforms(x)
        if self.normalize:
            x = (x - self.mean) / self.std
        return x


class ImageModel(nn.Module):
    """What an exported image model computes: preprocessing, then the network."""

    def __init__(self, prepare: ImageEvalModule, model: nn.Module) -> None:
        super().__init__()
        self.prepare, self.model = prepare, model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self.prepare(images))


class ImagePreprocessor(Preprocessor):
    """Turns a batch's stored inputs (uint8 images) into what the model takes."""

    def __init__(self, train: Sequence[nn.Module], evaluation: ImageEvalModule) -> None:
        self.train_transforms = list(train)
        self.eval_module = evaluation

    def to(self, device: torch.device | str) -> ImagePreprocessor:
        self.eval_module = self.eval_module.to(device)
        return self

    def train_inputs(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x = inputs[0]
        if self.train_transforms:
            # v2 transforms draw one set of random parameters per call: call per image, on
            # the CPU (uint8; on a GPU each call would launch kernels: ~10x slower on an H100).
            device = x.device
            x = torch.stack([self.augment_image(img) for img in x.cpu()])
            x = x.to(device, non_blocking=True)
        x = x.float().div_(255.0)
        return (self._normalise(x),)

    def augment_image(self, img: torch.Tensor) -> torch.Tensor:
        for t in self.train_transforms:
            img = t(img)
        return img

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        m = self.eval_module
        return (x - m.mean) / m.std if m.normalize else x

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """float images in [0, 1] -> model space: the step after the random transforms in
        `train_inputs`, for images made on the fly (a GAN generator's output). Differentiable."""
        return self._normalise(x)

    def eval_inputs(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return (self.eval_module(inputs[0].float().div_(255.0)),)

    def export_target(
        self, model: nn.Module, stored: tuple[torch.Tensor, ...], rebuild: Rebuild
    ) -> ExportTarget:
        """Exported image models take float32 images in [0, 1] and return class logits;
        eval transforms and normalisation are inside the file."""
        from torchkiln.runtime.model_artifact import state_for_saving

        prepare = self.eval_module.cpu()
        return ExportTarget(
            module=ImageModel(prepare, model).eval(),
            example=(stored[0].float() / 255.0,),
            input_names=["images"],
            dynamic_axes={"images": {0: "batch"}},
            output_names=["logits"],
            rebuild=lambda state: ImageModel(prepare, rebuild(state)).eval(),
            weights=state_for_saving(model),
        )

    def write_mistakes(
        self,
        split: Any,
        wrong: torch.Tensor,
        predicted: torch.Tensor,
        classes: list[str],
        out_dir: Path,
        plots_dir: Path,
    ) -> None:
        """evaluate's misclassified examples: a labelled grid, plots/misclassified.png."""
        from torchkiln.runtime.mistakes import mistakes_grid

        mistakes_grid(split, wrong, predicted, classes, plots_dir / "misclassified.png")

    def describe(self) -> dict[str, Any]:
        m = self.eval_module
        return {
            "input": "float32 images in [0, 1], N x C x H x W",
            "normalize": {"mean": m.mean.flatten().tolist(), "std": m.std.flatten().tolist()}
            if m.normalize
            else None,
        }


def _build_transforms(configs: list[dict[str, Any]]) -> list[nn.Module]:
    built = []
    for raw in configs:
        cfg = kinds.transforms.get(raw["name"]).model_validate(raw)
        built.append(cfg.build())
    return built


def image_preprocessor(info: DatasetInfo, transforms_dir: Path | None) -> ImagePreprocessor:
    """The preprocessor for images, from the augment stage's artifact when there is one.

    Without an augment stage, images are normalised with the train statistics (augment's
    default) and not augmented.
    """
    mean, std = list(info.mean), list(info.std)
    if transforms_dir is None:
        return ImagePreprocessor([], ImageEvalModule([], mean, std))
    spec = read_json(transforms_dir / "transforms.json")
    if spec.get("artifact") != "transforms":
        raise RunError(f"{transforms_dir} is not a transforms artifact")
    normalize = spec["normalize"]
    evaluation = ImageEvalModule(
        _build_transforms(spec["eval"]),
        normalize["mean"] if normalize else None,
        normalize["std"] if normalize else None,
    )
    return ImagePreprocessor(_build_transforms(spec["train"]), evaluation)


def preprocessor_for(info: DatasetInfo, transforms_dir: Path | None) -> Preprocessor:
    """The preprocessor of the dataset's modality, set up from the augment stage's artifact."""
    from torchkiln.data.formats import preprocessor_factory

    made = preprocessor_factory(info.modality)(info, transforms_dir)
    if not isinstance(made, Preprocessor):
        raise RunError(
            f"the preprocessor registered for modality {info.modality!r} is a "
            f"{type(made).__name__}, not a torchkiln.runtime.preprocess.Preprocessor"
        )
    return made
