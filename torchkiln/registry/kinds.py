"""The registry kinds every pipeline shares, and the base class of each kind's components.

Built-in components register through these exact objects, as a user plugin does:

    from typing import Literal
    from torchkiln.registry import ModelConfig, models

    @models.register
    class TinyNet(ModelConfig):
        \"\"\"Two linear layers.\"\"\"
        name: Literal["tiny_net"] = "tiny_net"
        hidden: int = 32

        def build(self, info):
            import torch.nn as nn   # import torch inside build: validation stays torch-free
            ...

Domain packs may add kinds of their own (the text pack adds `tokenizer`) with `Registry(...)`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from torchkiln.catalog import section
from torchkiln.registry.component import Component
from torchkiln.registry.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from torchkiln.stages.base import StageKind


class DatasetConfig(Component):
    """Loads raw examples for load_data. `modality` says what kind of inputs it yields."""

    modality: ClassVar[str] = "image"


class TransformConfig(Component):
    """One step of a transform list; `build()` returns a callable on tensors."""


class ModelConfig(Component):
    """Builds an `nn.Module` from the dataset's description (`build(info)`)."""

    #: Input modalities the model accepts ("image", "text", ...); checked at validation.
    modalities: ClassVar[frozenset[str]] = frozenset({"image"})
    #: Tasks the model serves.
    tasks: ClassVar[frozenset[str]] = frozenset({"classification"})

    def initialize(self, module: Any, dataset: Any) -> dict[str, Any] | None:
        """Called by build_model (only there) after `build(info)`, before `weights:` load:
        initialise `module` from files this config names (e.g. pretrained word vectors),
        given the dataset artifact (`dataset.folder`, `dataset.info`). Parameters it sets
        `requires_grad_(False)` stay frozen. Returns facts for the build summary, or None."""
        return None


class LossConfig(Component):
    """Builds a loss module (`build(info)`)."""


class OptimizerConfig(Component):
    """Builds a `torch.optim.Optimizer` over parameter groups (`build(params)`)."""


class SchedulerConfig(Component):
    """Builds a learning-rate scheduler (`build(optimizer, steps_per_epoch, epochs)`)."""


class MetricConfig(Component):
    """A metric computed from predictions and targets."""


class ExporterConfig(Component):
    """Writes one exported model format and checks it against the eager model."""


class TaskConfig(Component):
    """What a pipeline learns to do; a task may choose the default stage kind per stage key."""

    #: stage key -> stage kind used when `uses:` is absent (before the key itself).
    stage_defaults: ClassVar[dict[str, str]] = {}

    def export_target(self, model: Any, preprocess: Any, stored: Any, rebuild: Any) -> Any:
        """What the export stage exports for this task (an `ExportTarget`). By default the
        trained model behind the modality's preprocessing; a GAN task exports its generator."""
        return preprocess.export_target(model, stored, rebuild)


def _generic(kind: str) -> dict[str, Any]:
    """The generic-adapter hooks for a kind backed by the torch API catalog."""

    def lookup(name: str) -> type[Component] | None:
        from torchkiln.common.generic import generic_component

        return generic_component(kind, name)

    return {"generic": lookup, "generic_names": lambda: list(section(kind))}


stages: Registry[type[StageKind]] = Registry(
    "stage", "A stage kind: what one step of the pipeline does.", label="stage kind"
)
datasets: Registry[type[DatasetConfig]] = Registry(
    "dataset", "A dataset: where load_data reads examples from."
)
transforms: Registry[type[TransformConfig]] = Registry(
    "transform", "A data transform (torchvision.transforms.v2 for images).", **_generic("transform")
)
models: Registry[type[ModelConfig]] = Registry("model", "A model architecture.")
losses: Registry[type[LossConfig]] = Registry(
    "loss", "A loss function (any torch.nn loss by name).", **_generic("loss")
)
optimizers: Registry[type[OptimizerConfig]] = Registry(
    "optimizer", "An optimizer (any torch.optim class by name).", **_generic("optimizer")
)
schedulers: Registry[type[SchedulerConfig]] = Registry(
    "scheduler",
    "A learning-rate scheduler (any torch.optim.lr_scheduler class by name).",
    **_generic("scheduler"),
)
metrics: Registry[type[MetricConfig]] = Registry("metric", "An evaluation metric.")
exporters: Registry[type[ExporterConfig]] = Registry("exporter", "An export format.")
tasks: Registry[type[TaskConfig]] = Registry("task", "A task family.")
