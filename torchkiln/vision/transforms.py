"""Image transforms from torchvision.transforms.v2, with typed parameters.

Any other v2 transform works by class name through the generic adapter. Transforms
run on uint8 image batches before normalisation and must keep the image shape (resize
on the dataset with `image_size:` instead), so the model sees one input shape.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, NonNegativeFloat, PositiveInt

from torchkiln.registry import TransformConfig, transforms

Probability = Annotated[float, Field(ge=0, le=1)]
Pair = Annotated[list[NonNegativeFloat], Field(min_length=2, max_length=2)]
Size = PositiveInt | Annotated[list[PositiveInt], Field(min_length=2, max_length=2)]
Unit = Annotated[float, Field(ge=0, le=1)]


def _v2() -> Any:
    from torchvision.transforms import v2

    return v2


@transforms.register
class RandomAffine(TransformConfig):
    """Random rotation, translation, scaling and shear."""

    name: Literal["RandomAffine"] = "RandomAffine"
    degrees: NonNegativeFloat = 0.0
    """Rotate by up to this many degrees either way."""
    translate: Annotated[list[Unit], Field(min_length=2, max_length=2)] | None = None
    """Largest horizontal and vertical shift, as fractions of the width and height."""
    scale: Pair | None = None
    """Scale factor range [min, max]."""
    shear: NonNegativeFloat | None = None
    """Shear by up to this many degrees either way."""

    def build(self) -> Any:
        return _v2().RandomAffine(
            self.degrees, translate=self.translate, scale=self.scale, shear=self.shear
        )


@transforms.register
class RandomRotation(TransformConfig):
    """Rotate by a random angle."""

    name: Literal["RandomRotation"] = "RandomRotation"
    degrees: NonNegativeFloat = 10.0
    """Rotate by up to this many degrees either way."""

    def build(self) -> Any:
        return _v2().RandomRotation(self.degrees)


@transforms.register
class RandomCrop(TransformConfig):
    """Pad, then crop back to `size` at a random position."""

    name: Literal["RandomCrop"] = "RandomCrop"
    size: Size
    """Output [height, width] (or square side); must equal the image size."""
    padding: Annotated[int, Field(ge=0)] = 0
    """Pixels of padding on each border before cropping."""
    padding_mode: Literal["constant", "edge", "reflect", "symmetric"] = "constant"
    """How to fill the padding."""

    def build(self) -> Any:
        return _v2().RandomCrop(self.size, padding=self.padding, padding_mode=self.padding_mode)


@transforms.register
class RandomResizedCrop(TransformConfig):
    """Crop a random area and aspect ratio, resized to `size`."""

    name: Literal["RandomResizedCrop"] = "RandomResizedCrop"
    size: Size
    """Output [height, width] (or square side); must equal the image size."""
    scale: Pair = Field(default_factory=lambda: [0.08, 1.0])
    """Range of the cropped area, as a fraction of the image."""
    ratio: Pair = Field(default_factory=lambda: [0.75, 1.3333333])
    """Range of aspect ratios of the crop."""

    def build(self) -> Any:
        return _v2().RandomResizedCrop(
            self.size, scale=tuple(self.scale), ratio=tuple(self.ratio), antialias=True
        )


@transforms.register
class RandomHorizontalFlip(TransformConfig):
    """Mirror left-right with probability p."""

    name: Literal["RandomHorizontalFlip"] = "RandomHorizontalFlip"
    p: Probability = 0.5
    """Probability of flipping."""

    def build(self) -> Any:
        return _v2().RandomHorizontalFlip(self.p)


@transforms.register
class RandomVerticalFlip(TransformConfig):
    """Mirror top-bottom with probability p."""

    name: Literal["RandomVerticalFlip"] = "RandomVerticalFlip"
    p: Probability = 0.5
    """Probability of flipping."""

    def build(self) -> Any:
        return _v2().RandomVerticalFlip(self.p)


@transforms.register
class ColorJitter(TransformConfig):
    """Random brightness, contrast, saturation and hue changes."""

    name: Literal["ColorJitter"] = "ColorJitter"
    brightness: NonNegativeFloat = 0.0
    """Brightness factor drawn from [1 - b, 1 + b]."""
    contrast: NonNegativeFloat = 0.0
    """Contrast factor drawn from [1 - c, 1 + c]."""
    saturation: NonNegativeFloat = 0.0
    """Saturation factor drawn from [1 - s, 1 + s] (RGB only)."""
    hue: Annotated[float, Field(ge=0, le=0.5)] = 0.0
    """Hue shift drawn from [-h, h] (RGB only)."""

    def build(self) -> Any:
        return _v2().ColorJitter(self.brightness, self.contrast, self.saturation, self.hue)


@transforms.register
class RandomErasing(TransformConfig):
    """Erase a random rectangle (cutout)."""

    name: Literal["RandomErasing"] = "RandomErasing"
    p: Probability = 0.5
    """Probability of erasing."""
    scale: Pair = Field(default_factory=lambda: [0.02, 0.33])
    """Range of the erased area, as a fraction of the image."""
    value: Annotated[int, Field(ge=0, le=255)] = 0
    """Pixel value to fill the rectangle with."""

    def build(self) -> Any:
        return _v2().RandomErasing(self.p, scale=tuple(self.scale), value=self.value)


@transforms.register
class GaussianBlur(TransformConfig):
    """Blur with a Gaussian kernel of random width."""

    name: Literal["GaussianBlur"] = "GaussianBlur"
    kernel_size: Annotated[int, Field(ge=1)] = 3
    """Kernel side (odd)."""
    sigma: Pair = Field(default_factory=lambda: [0.1, 2.0])
    """Range of the kernel's standard deviation."""

    def build(self) -> Any:
        return _v2().GaussianBlur(self.kernel_size, sigma=tuple(self.sigma))
