"""GAN stage kinds: train_gan and evaluate_gan (configs and declarations; torch inside run()).

In a `task: gan` spec the task maps the stage keys `train:` and `evaluate:` to these kinds,
so a spec needs no `uses:`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, PositiveFloat

from torchkiln.common.optim import Adam
from torchkiln.gan.losses import GanLossConfig, NonSaturatingBce, gan_losses
from torchkiln.registry import (
    OptimizerConfig,
    SchedulerConfig,
    models,
    optimizers,
    registered,
    schedulers,
    stages,
)
from torchkiln.registry.component import Config
from torchkiln.registry.registry import UnknownNameError
from torchkiln.schemas.fields import ArtifactRef
from torchkiln.stages.base import (
    NO_FACTS,
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


def _dcgan_adam() -> Adam:
    return Adam(lr=2e-4, betas=[0.5, 0.999])


class NetworkTraining(Config):
    """Optimizer, learning-rate schedule and gradient clipping of one network."""

    optimizer: Annotated[OptimizerConfig, registered(optimizers)] = Field(
        default_factory=_dcgan_adam
    )
    """The optimizer (`kiln list optimizer`); default: DCGAN's Adam(lr 2e-4, betas [0.5, 0.999])."""
    scheduler: Annotated[SchedulerConfig, registered(schedulers)] | None = None
    """Learning-rate schedule (default: constant); per-step schedules count this network's steps."""
    clip_grad_norm: PositiveFloat | None = None
    """Clip this network's gradient norm to this value."""


class EmaConfig(Config):
    """An exponential moving average of the generator's weights."""

    decay: Annotated[float, Field(gt=0, lt=1)] = 0.999
    """Weight of the old average per generator step (warmed up: min(decay, (1+t)/(10+t)))."""


class TrainGanConfig(StageConfig):
    """Settings of a train_gan stage."""

    epochs: Annotated[int, Field(ge=1, le=100_000)] = 20
    """Passes over the training split (each batch is one discriminator step)."""
    batch_size: Annotated[int, Field(ge=2, le=1_000_000)] = 64
    """Real (and generated) images per step; a last partial batch is dropped."""
    loss: Annotated[GanLossConfig, registered(gan_losses)] = Field(default_factory=NonSaturatingBce)
    """The adversarial objective (`kiln list gan_loss`): bce, hinge or wgan_gp."""
    n_critic: Annotated[int, Field(ge=1, le=100)] = 1
    """Discriminator steps per generator step (5 is usual for wgan_gp)."""
    generator: NetworkTraining = Field(default_factory=NetworkTraining)
    """Optimizer and schedule of the generator."""
    discriminator: NetworkTraining = Field(default_factory=NetworkTraining)
    """Optimizer and schedule of the discriminator."""
    ema: EmaConfig | None = None
    """Keep an EMA of the generator; it is then the generator that is saved, sampled,
    evaluated and exported (default: none)."""
    samples: Annotated[int, Field(ge=1, le=256)] = 64
    """Fixed-noise images in each epoch's sample grid (the same noise every epoch)."""
    contact_columns: Annotated[int, Field(ge=1, le=64)] = 10
    """Images per epoch (one row each) in the contact sheet of all epochs."""
    num_workers: Annotated[int, Field(ge=0, le=64)] = 0
    """DataLoader worker processes for datasets read from files (in-memory data needs none)."""
    resume: bool = True
    """Resume an interrupted run from its last epoch checkpoint."""
    loggers: list[Logger] = Field(default_factory=list)
    """Also log to these: `tensorboard` (scalars per step and epoch, learning rates, sample
    images, hparams) under .kiln/tensorboard/<pipeline>/<stage>/; needs
    `pip install 'torchkiln[tensorboard]'`."""
    distributed: DistributedConfig | None = None
    """Train on several processes (torch.distributed DDP; both networks are wrapped),
    e.g. `{nproc: 2}`; default: one process."""


def gan_model_problems(kind: str, inputs: Mapping[str, Facts]) -> Problems:
    """A GAN kind must consume a GAN model: one whose config serves the `gan` task."""
    name = inputs.get("model", NO_FACTS).model
    if name is None:
        return []  # nothing known at validation time (e.g. a plugin's producer)
    try:
        cls = models.get(name)
    except UnknownNameError:
        return []  # reported where the model is named
    if "gan" in cls.tasks:
        return []
    return [
        (
            (),
            f"stage kind {kind!r} needs a GAN model (a generator/discriminator pair such as "
            f"dcgan or mlp_gan), but its model input is {name!r}, which serves "
            f"{', '.join(sorted(cls.tasks))}",
        )
    ]


@stages.register
class TrainGan(ModelStageKind):
    """Train a GAN: alternating D and G steps; losses, D(x), D(G(z)), grad norms, sample grids."""

    name = "train_gan"
    config = TrainGanConfig
    model_artifact = "model"
    produces = "trained_model"
    writes_metrics = True
    tasks = frozenset({"gan"})
    plots = (
        PlotSpec("history.json", x="epoch", y=("d_loss", "g_loss"), title="GAN losses"),
        PlotSpec(
            "history.json",
            x="epoch",
            y=("d_real", "d_fake"),
            title="discriminator on real (D(x)) and generated (D(G(z))) images",
        ),
        PlotSpec(
            "history.json", x="epoch", y=("grad_norm_d", "grad_norm_g"), title="gradient norms"
        ),
        # a folder of images, one fixed-noise grid per epoch: samples/epoch_001.png, ...
        PlotSpec("samples"),
        PlotSpec("contact_sheet.png"),
    )

    @classmethod
    def check(cls, config: Any, inputs: Mapping[str, Facts], facts: GraphFacts) -> Problems:
        problems = gan_model_problems(cls.name, inputs)
        problems += distributed_problems(config.distributed, config.batch_size, facts.device)
        problems += logger_problems(config.loggers)
        if config.distributed is not None and config.distributed.strategy == "fsdp":
            problems.append(
                (
                    ("distributed", "strategy"),
                    "train_gan shards nothing: use strategy ddp (GANs here are small "
                    "enough for one device)",
                )
            )
        networks = {"generator": config.generator, "discriminator": config.discriminator}
        for net, settings in networks.items():
            scheduler = settings.scheduler
            if scheduler is not None and scheduler.needs_metric:
                problems.append(
                    (
                        (net, "scheduler", "name"),
                        f"{scheduler.name} steps on a validation value, which GAN training "
                        "does not have; use a fixed schedule (e.g. CosineAnnealingLR)",
                    )
                )
        return problems

    @classmethod
    def distributed(cls, config: Any) -> DistributedConfig | None:
        return config.distributed

    def run(self, ctx: StageContext) -> None:
        from torchkiln.gan.train import run_train_gan

        run_train_gan(ctx)


class ChecksConfig(Config):
    """Thresholds of the convergence analysis; a failed check is a warning in the metrics
    and the model card, not an error."""

    diversity_ratio: Annotated[float, Field(gt=0, le=1)] = 0.8
    """Mode collapse when the generated images' class diversity is below this fraction of
    the held-out real images' diversity."""
    spread_ratio: Annotated[float, Field(gt=0, le=1)] = 0.5
    """Mode collapse when the generated features' spread (covariance trace) is below this
    fraction of the real features' spread (collapse within classes)."""
    d_loss_floor: PositiveFloat = 0.05
    """Divergence when the discriminator loss stays within this of its minimum (0; more with
    label smoothing) for `window` epochs ..."""
    g_loss_rise: Annotated[float, Field(gt=1)] = 1.5
    """... while the generator loss rises by this factor over those epochs."""
    window: Annotated[int, Field(ge=2, le=1000)] = 3
    """Epochs the divergence pattern must last."""


class EvaluateGanConfig(StageConfig):
    """Settings of an evaluate_gan stage."""

    classifier: ArtifactRef
    """A classifier trained by another pipeline, e.g. `{pipeline: mnist_cnn, stage: train}`
    (a DVC dependency): its penultimate-layer features define the Fréchet distance, its
    predicted classes the diversity. It must take images of this dataset's shape."""
    classifier_transforms: ArtifactRef | None = None
    """That pipeline's augment stage, when its eval transforms or normalisation differ from
    the default (normalised with its dataset's statistics)."""
    features: Literal["penultimate", "logits"] = "penultimate"
    """Feature space: the input of the classifier's last linear layer, or its logits."""
    split: Literal["test", "val"] = "test"
    """Held-out real images: the scale's 'real' end. The train split is the reference."""
    samples: Annotated[int, Field(ge=2, le=1_000_000)] | None = None
    """Generated (and noise) images scored (default: as many as held-out real images, so
    the three distances have the same sample-size bias)."""
    batch_size: Annotated[int, Field(ge=1, le=1_000_000)] = 256
    """Images per forward pass."""
    grid: Annotated[int, Field(ge=0, le=256)] = 64
    """Generated images in plots/samples.png (0: none)."""
    checks: ChecksConfig = Field(default_factory=ChecksConfig)
    """Mode-collapse and divergence thresholds."""


@stages.register
class EvaluateGan(ModelStageKind):
    """Score a GAN offline: Fréchet distance and class diversity, with collapse warnings.

    Measured in the feature space of a classifier another pipeline trained, for generated,
    held-out real and noise images (so the scale is visible); divergence is read from the
    training history the model carries."""

    name = "evaluate_gan"
    config = EvaluateGanConfig
    model_artifact = "trained_model"
    produces = "evaluation"
    writes_metrics = True
    tasks = frozenset({"gan"})
    plots = (
        PlotSpec(
            "classes.json",
            x="class",
            y=("generated", "real"),
            title="share of each predicted class",
        ),
        PlotSpec("samples.png"),
    )

    @classmethod
    def plot_specs(cls, config: Any, inputs: Mapping[str, Facts]) -> tuple[PlotSpec, ...]:
        return tuple(p for p in cls.plots if p.file != "samples.png" or config.grid)

    @classmethod
    def check(cls, config: Any, inputs: Mapping[str, Facts], facts: GraphFacts) -> Problems:
        return gan_model_problems(cls.name, inputs)

    def run(self, ctx: StageContext) -> None:
        from torchkiln.gan.evaluate import run_evaluate_gan

        run_evaluate_gan(ctx)
