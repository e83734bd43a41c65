"""Image classification components: datasets, transforms and models."""

from torchkiln.vision import datasets, models, transforms

__all__ = ["datasets", "models", "transforms"]

from torchkiln.data.formats import register_format

register_format("image_index", "torchkiln.vision.loading:read_image_index")
