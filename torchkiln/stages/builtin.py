"""Registers the built-in stage kinds (imported as a built-in pack)."""

from torchkiln.stages import augment, build_model, evaluate, export, load_data, train

__all__ = ["augment", "build_model", "evaluate", "export", "load_data", "train"]
