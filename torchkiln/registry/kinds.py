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

Domain packs may add kinds of their own (the text pack adds `tokenizer`) with `Registry(...)`,
and install a generic adapter for names nobody registered (`Registry.set_generic`: the
common pack answers any torch optimizer, scheduler and loss; the vision pack any v2
transform and torchvision model).
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from pydantic import PositiveFloat

from torchkiln.registry.component import Component
from torchkiln.registry.registry import Registry


class RawDataset(Protocol):
    """What a dataset's `load()` returns: its examples, read but not split yet."""

    def write(self, out_dir: Path, *, dataset: Any, split: Any, seed: int, task: str) -> None:
        """Split the examples by load_data's `split` settings (seeded) and write the dataset
        artifact into `out_dir`; `dataset` is the config that loaded them."""
        ...


class DatasetConfig(Component):
    """Loads raw examples for load_data. `modality` says what kind of inputs it yields."""

    modality: ClassVar[str] = "image"

    @abstractmethod
    def load(self, seed: int) -> RawDataset:
        """Read the examples (import torch here, not at module level)."""


class TransformConfig(Component):
    """One step of a transform list."""

    @abstractmethod
    def build(self) -> Any:
        """The transform: a callable (an `nn.Module` for images) on one example's tensor."""


class ModelConfig(Component):
    """Builds an `nn.Module` from the dataset's description (`build(info)`)."""

    #: Input modalities the model accepts ("image", "text", ...); checked at validation.
    modalities: ClassVar[frozenset[str]] = frozenset({"image"})
    #: Tasks the model serves.
    tasks: ClassVar[frozenset[str]] = frozenset({"classification"})

    @abstractmethod
    def build(self, info: Any) -> Any:
        """The `nn.Module` for a dataset described by `info` (a `DatasetInfo`: classes,
        input shape, statistics). Import torch here, not at module level."""

    def initialize(self, module: Any, dataset: Any) -> dict[str, Any] | None:
        """Called by build_model (only there) after `build(info)`, before `weights:` load:
        initialise `module` from files this config names (e.g. pretrained word vectors),
        given the dataset artifact (`dataset.folder`, `dataset.info`). Parameters it sets
        `requires_grad_(False)` stay frozen. Returns facts for the build summary, or None."""
        return None


class LossConfig(Component):
    """A training loss."""

    @abstractmethod
    def build(self, info: Any) -> Any:
        """The loss module, called as `loss(outputs, targets)`; `info` describes the data."""


class OptimizerConfig(Component):
    """An optimizer."""

    @abstractmethod
    def build(self, params: Any) -> Any:
        """A `torch.optim.Optimizer` over `params` (parameters or parameter groups)."""


Interval = Literal["epoch", "step"]


class SchedulerConfig(Component):
    """A learning-rate schedule. Every scheduler, registered or generic, answers the same
    two questions: `interval` (is it stepped after each epoch or after each optimizer step)
    and `needs_metric` (does its `step()` take the monitored validation value)."""

    #: Whether `step()` takes the monitored validation value (ReduceLROnPlateau).
    needs_metric: ClassVar[bool] = False
    interval: Interval = "epoch"
    """Step the scheduler after every epoch, or after every optimizer step."""

    @abstractmethod
    def build(self, optimizer: Any, steps_per_epoch: int, epochs: int, mode: str = "min") -> Any:
        """The scheduler for `optimizer`, over `epochs` epochs of `steps_per_epoch` optimizer
        steps; `mode` ("min" or "max") is the direction of the monitored value."""


class MetricConfig(Component):
    """A classification metric computed from logits and targets."""

    @abstractmethod
    def compute(self, logits: Any, targets: Any, classes: list[str]) -> dict[str, Any]:
        """Names -> numbers for metrics.json (per-class values nested under class names)."""


class ExporterConfig(Component):
    """Writes one exported model format and checks it against the eager model."""

    tolerance: PositiveFloat = 1e-4
    """Largest allowed absolute difference from the eager model's outputs."""

    @abstractmethod
    def export(self, target: Any, out_dir: Path) -> dict[str, Any]:
        """Write the file for `target` (an `ExportTarget`) into `out_dir`, load it back and
        compare it with the eager model; returns what the model card records (`file`,
        `max_abs_diff`, ...)."""


class TaskConfig(Component):
    """What a pipeline learns to do; a task may choose the default stage kind per stage key."""

    #: stage key -> stage kind used when `uses:` is absent (before the key itself).
    stage_defaults: ClassVar[dict[str, str]] = {}

    def export_target(self, model: Any, preprocess: Any, stored: Any, rebuild: Any) -> Any:
        """What the export stage exports for this task (an `ExportTarget`). By default the
        trained model behind the modality's preprocessing; a GAN task exports its generator."""
        return preprocess.export_target(model, stored, rebuild)


#: Stage kinds (`torchkiln.stages.base.StageKind` subclasses; typed access: `stage_kind()`
#: there). The registry knows no stage kind itself: the stage packs register into it.
stages: Registry[type[Any]] = Registry(
    "stage", "A stage kind: what one step of the pipeline does.", label="stage kind"
)
datasets: Registry[type[DatasetConfig]] = Registry(
    "dataset", "A dataset: where load_data reads examples from."
)
transforms: Registry[type[TransformConfig]] = Registry(
    "transform", "A data transform (torchvision.transforms.v2 for images)."
)
models: Registry[type[ModelConfig]] = Registry("model", "A model architecture.")
losses: Registry[type[LossConfig]] = Registry(
    "loss", "A loss function (any torch.nn loss by name)."
)
optimizers: Registry[type[OptimizerConfig]] = Registry(
    "optimizer", "An optimizer (any torch.optim class by name)."
)
schedulers: Registry[type[SchedulerConfig]] = Registry(
    "scheduler",
    "A learning-rate scheduler (any torch.optim.lr_scheduler class by name).",
)
metrics: Registry[type[MetricConfig]] = Registry("metric", "An evaluation metric.")
exporters: Registry[type[ExporterConfig]] = Registry("exporter", "An export format.")
tasks: Registry[type[TaskConfig]] = Registry("task", "A task family.")
