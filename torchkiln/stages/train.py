"""train: fit the model; per-epoch history as DVC metrics and plots; resumable checkpoints."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt

from torchkiln.common.losses import CrossEntropyLoss
from torchkiln.common.optim import AdamW
from torchkiln.registry import (
    LossConfig,
    OptimizerConfig,
    SchedulerConfig,
    losses,
    optimizers,
    registered,
    schedulers,
    stages,
)
from torchkiln.registry.component import Config
from torchkiln.stages.base import (
    Facts,
    GraphFacts,
    ModelStageKind,
    PlotSpec,
    Problems,
    StageConfig,
)
from torchkiln.stages.distributed import DistributedConfig, distributed_problems
from torchkiln.stages.loggers import Logger, logger_problems

if TYPE_CHECKING:  # pragma: no cover
    from torchkiln.runtime.context import StageContext


class EarlyStoppingConfig(Config):
    """Stop when the monitored value has not improved for `patience` epochs."""

    patience: PositiveInt = 5
    """Epochs without improvement before stopping."""
    min_delta: NonNegativeFloat = 0.0
    """Smallest change that counts as an improvement."""


class TrainConfig(StageConfig):
    """Settings of a train stage."""

    epochs: Annotated[int, Field(ge=1, le=100_000)] = 10
    """Passes over the training split."""
    batch_size: Annotated[int, Field(ge=1, le=1_000_000)] = 64
    """Examples per optimizer step (before gradient accumulation)."""
    optimizer: Annotated[OptimizerConfig, registered(optimizers)] = Field(default_factory=AdamW)
    """The optimizer (`kiln list optimizer`)."""
    scheduler: Annotated[SchedulerConfig, registered(schedulers)] | None = None
    """Learning-rate schedule (default: constant)."""
    loss: Annotated[LossConfig, registered(losses)] = Field(default_factory=CrossEntropyLoss)
    """The loss (`kiln list loss`)."""
    grad_accumulation: Annotated[int, Field(ge=1, le=1024)] = 1
    """Batches whose gradients add up before each optimizer step."""
    clip_grad_norm: PositiveFloat | None = None
    """Clip the global gradient norm to this value."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Autocast precision; bf16 works on CPU, fp16 needs CUDA (with a gradient scaler)."""
    bucket_by_length: bool = False
    """Draw each epoch's batches from examples of similar lengths, so they pad little
    (variable-length data such as text; needs a dataset whose split reader has `lengths`):
    the shuffled examples are sorted by length within pools of `bucket_pool` batches, cut
    into batches, and the batches shuffled. Off: uniformly shuffled batches."""
    bucket_pool: Annotated[int, Field(ge=1, le=10_000)] = 50
    """With `bucket_by_length`, how many batches' worth of examples are sorted together
    (larger: less padding, less randomness)."""
    num_workers: Annotated[int, Field(ge=0, le=64)] = 0
    """DataLoader worker processes for datasets read from files (in-memory data needs none)."""
    monitor: Literal["val_loss", "val_accuracy"] = "val_loss"
    """Validation value that picks the best checkpoint and drives early stopping."""
    early_stopping: EarlyStoppingConfig | None = None
    """Stop early when `monitor` stops improving (default: train all epochs)."""
    channels_last: bool = False
    """Use the channels-last memory format (faster convolutions on recent GPUs)."""
    compile: bool = False
    """Compile the model with torch.compile."""
    resume: bool = True
    """Resume an interrupted run from its last epoch checkpoint."""
    loggers: list[Logger] = Field(default_factory=list)
    """Also log to these: `tensorboard` (scalars per step and epoch, learning rates, sample
    images, hparams) under .kiln/tensorboard/<pipeline>/<stage>/; needs
    `pip install 'torchkiln[tensorboard]'`."""
    distributed: DistributedConfig | None = None
    """Train on several processes (torch.distributed DDP or FSDP), e.g. `{nproc: 2}`;
    default: one process."""


@stages.register
class Train(ModelStageKind):
    """Train the model; keeps the best epoch by the monitored validation value."""

    name = "train"
    config = TrainConfig
    model_artifact = "model"
    produces = "trained_model"
    writes_metrics = True
    plots = (
        PlotSpec("history.json", x="epoch", y=("train_loss", "val_loss"), title="loss"),
        PlotSpec("history.json", x="epoch", y=("train_accuracy", "val_accuracy"), title="accuracy"),
    )

    @classmethod
    def check(cls, config: Any, inputs: Mapping[str, Facts], facts: GraphFacts) -> Problems:
        needs_val = config.early_stopping is not None or (
            config.scheduler is not None and config.scheduler.needs_metric
        )
        problems = distributed_problems(config.distributed, config.batch_size, facts.device)
        problems += logger_problems(config.loggers)
        if needs_val and "dataset" in inputs and inputs["dataset"].has_val is False:
            problems.append(
                (
                    (),
                    f"early stopping and plateau schedules watch {config.monitor}, "
                    "but load_data's split.val is 0",
                )
            )
        return problems

    @classmethod
    def distributed(cls, config: Any) -> DistributedConfig | None:
        return config.distributed

    def run(self, ctx: StageContext) -> None:
        from torchkiln.runtime.train import run_train

        run_train(ctx)
