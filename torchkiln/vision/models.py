"""Image models. Configs only; the torch modules live in vision/nets.py."""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, PositiveInt, create_model

from torchkiln.catalog import section
from torchkiln.data.info import DatasetInfo
from torchkiln.registry import ModelConfig, models

Dropout = Annotated[float, Field(ge=0, lt=1)]


@models.register
class Mlp(ModelConfig):
    """A multilayer perceptron on flattened inputs."""

    name: Literal["mlp"] = "mlp"
    hidden: list[PositiveInt] = Field(default_factory=lambda: [256, 128])
    """Width of each hidden layer."""
    dropout: Dropout = 0.0
    """Dropout after each hidden layer."""
    activation: Literal["relu", "gelu", "tanh"] = "relu"
    """Activation after each hidden layer."""

    def build(self, info: DatasetInfo) -> Any:
        from torchkiln.vision import nets

        return nets.mlp(self, info)


@models.register
class SmallCnn(ModelConfig):
    """A configurable LeNet/VGG-style CNN: conv blocks, each followed by pooling, then a head."""

    name: Literal["small_cnn"] = "small_cnn"
    channels: Annotated[list[PositiveInt], Field(min_length=1, max_length=8)] = Field(
        default_factory=lambda: [32, 64]
    )
    """Output channels of each conv block."""
    convs_per_block: Annotated[int, Field(ge=1, le=4)] = 1
    """Conv layers per block (1: LeNet-like, 2: VGG-like)."""
    kernel_size: Literal[3, 5] = 3
    """Conv kernel side."""
    batch_norm: bool = True
    """Batch normalisation after each conv."""
    pool: Literal["max", "avg"] = "max"
    """Downsampling after each block."""
    hidden: PositiveInt | None = 128
    """Width of the hidden layer of the head (null: a linear head)."""
    dropout: Dropout = 0.25
    """Dropout before the head's last layer."""

    def build(self, info: DatasetInfo) -> Any:
        from torchkiln.vision import nets

        return nets.small_cnn(self, info)


class TorchvisionModel(ModelConfig):
    """A torchvision classification model by name, e.g. torchvision/resnet18 (random init;
    load weights with build_model's `weights:`)."""

    name: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    """Extra keyword arguments for the torchvision builder (e.g. dropout)."""
    modalities: ClassVar[frozenset[str]] = frozenset({"image"})

    def build(self, info: DatasetInfo) -> Any:
        from torchkiln.vision import nets

        return nets.torchvision_model(self, info)


@cache
def torchvision_model(name: str) -> type[ModelConfig] | None:
    if name not in section("model"):
        return None
    return create_model(  # type: ignore[call-overload, no-any-return]
        f"TorchvisionModel[{name}]",
        __base__=TorchvisionModel,
        __module__=__name__,
        name=(Literal[name], name),
    )


models.set_generic(torchvision_model, lambda: list(section("model")))
