"""Image classification components: datasets, transforms and models."""

from torchkiln.vision import datasets, models, transforms

__all__ = ["datasets", "models", "transforms"]
