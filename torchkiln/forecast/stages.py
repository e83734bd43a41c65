"""Forecasting stage kinds: load_series, train_forecast and evaluate_forecast (configs and
declarations; pandas and torch inside run()).

In a `task: forecast` spec the task maps the stage keys `load_data:`, `train:` and
`evaluate:` to these kinds, so a spec needs no `uses:`. build_model and export are the
shared kinds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, model_validator

from torchkiln.common.optim import AdamW
from torchkiln.forecast.losses import ForecastLossConfig, forecast_losses
from torchkiln.registry import (
    DatasetConfig,
    OptimizerConfig,
    SchedulerConfig,
    datasets,
    models,
    optimizers,
    registered,
    schedulers,
    stages,
)
from torchkiln.registry.component import Config
from torchkiln.registry.registry import UnknownNameError
from torchkiln.stages.base import (
    NO_FACTS,
    Facts,
    GraphFacts,
    ModelStageKind,
    PlotSpec,
    Problems,
    StageConfig,
    StageKind,
)
from torchkiln.stages.distributed import DistributedConfig, distributed_problems
from torchkiln.stages.loggers import Logger, logger_problems

if TYPE_CHECKING:  # pragma: no cover
    from torchkiln.runtime.context import StageContext

Steps = Annotated[int, Field(ge=1, le=10_000_000)]


class WindowsConfig(Config):
    """How the series are cut into (lookback, horizon) windows."""

    lookback: Steps
    """Past steps the model sees (its input length)."""
    horizon: Steps
    """Steps it forecasts at once (direct multi-step output)."""
    stride: Steps = 1
    """Steps between the origins of consecutive training windows (1: every window)."""


class SeriesSplitConfig(Config):
    """Time-ordered splits, counted in steps from the end of each series: never shuffled
    across time. Test is the latest span, validation the span before it; no training
    window has a target value from either."""

    test: Steps
    """Steps at the end of every series held out for the final test and the backtest
    (e.g. 12: the last year of a monthly series)."""
    val: Annotated[int, Field(ge=0, le=10_000_000)] = 0
    """Steps before the test span for validation (model selection, early stopping);
    0 or at least the horizon, so a whole validation window fits."""


class ScalingConfig(Config):
    """How target values are scaled for the network; fitted on the training span only,
    stored in the dataset artifact, inverted for metrics, and inside exported models."""

    method: Literal["standard", "minmax", "robust", "none"] = "standard"
    """standard: (x - mean) / std; minmax: to [0, 1]; robust: (x - median) / IQR."""
    log: bool = False
    """Take log(1 + x) first (for positive series whose seasonal swings grow with the level)."""
    per: Literal["series", "global"] = "series"
    """One scaler per series (each keeps its own), or one for all series together."""


class LoadSeriesConfig(StageConfig):
    """Settings of a load_series stage."""

    dataset: Annotated[DatasetConfig, registered(datasets)]
    """Where the series come from (`kiln list dataset`: csv_series, bundled_series)."""
    windows: WindowsConfig
    """Lookback, horizon and stride of the windows."""
    split: SeriesSplitConfig
    """Validation and test spans at the end of every series, in steps."""
    scaling: ScalingConfig = Field(default_factory=ScalingConfig)
    """Target scaling (covariates are standardised per column on the training span)."""

    @model_validator(mode="after")
    def _val_holds_a_window(self) -> LoadSeriesConfig:
        if 0 < self.split.val < self.windows.horizon:
            raise ValueError(
                f"split.val ({self.split.val}) must be 0 or at least windows.horizon "
                f"({self.windows.horizon}): validation scores whole forecast windows"
            )
        return self


@stages.register
class LoadSeries(StageKind):
    """Read time series, split them by time, fit the scaling on the training span, write
    the dataset artifact (the series, the window origins of each split, the scaler)."""

    name = "load_series"
    config = LoadSeriesConfig
    produces = "dataset"
    reads = ("seed", "task")
    tasks = frozenset({"forecast"})

    @classmethod
    def output_facts(cls, config: Any, inputs: Mapping[str, Facts]) -> Facts:
        return Facts(modality=config.dataset.modality, has_val=config.split.val > 0)

    @classmethod
    def check(cls, config: Any, inputs: Mapping[str, Facts], facts: GraphFacts) -> Problems:
        if config.dataset.modality != "series":
            return [
                (
                    ("dataset", "name"),
                    f"dataset {config.dataset.name!r} holds {config.dataset.modality} examples; "
                    "load_series reads time series (csv_series, bundled_series)",
                )
            ]
        return []

    def run(self, ctx: StageContext) -> None:
        from torchkiln.forecast.loading import run_load_series

        run_load_series(ctx)


class EarlyStoppingConfig(Config):
    """Stop when the validation loss has not improved for `patience` epochs."""

    patience: PositiveInt = 10
    """Epochs without improvement before stopping."""
    min_delta: NonNegativeFloat = 0.0
    """Smallest change that counts as an improvement."""


class TrainForecastConfig(StageConfig):
    """Settings of a train_forecast stage."""

    epochs: Annotated[int, Field(ge=1, le=100_000)] = 50
    """Passes over the training windows."""
    batch_size: Annotated[int, Field(ge=1, le=1_000_000)] = 32
    """Windows per optimizer step (batches mix windows of every series)."""
    optimizer: Annotated[OptimizerConfig, registered(optimizers)] = Field(
        default_factory=lambda: AdamW(lr=1e-3, weight_decay=1e-4)
    )
    """The optimizer (`kiln list optimizer`)."""
    scheduler: Annotated[SchedulerConfig, registered(schedulers)] | None = None
    """Learning-rate schedule (default: constant)."""
    loss: Annotated[ForecastLossConfig, registered(forecast_losses)] | None = None
    """The loss on scaled values (`kiln list forecast_loss`); default: pinball for a model
    with quantiles, else mse."""
    clip_grad_norm: PositiveFloat | None = 1.0
    """Clip the global gradient norm to this value (recurrent nets like it); null: off."""
    early_stopping: EarlyStoppingConfig | None = None
    """Stop early when val_loss stops improving (default: train all epochs)."""
    resume: bool = True
    """Resume an interrupted run from its last epoch checkpoint."""
    loggers: list[Logger] = Field(default_factory=list)
    """Also log to these: `tensorboard` (scalars per step and epoch, learning rates,
    hparams) under .kiln/tensorboard/<pipeline>/<stage>/; needs
    `pip install 'torchkiln[tensorboard]'`."""
    distributed: DistributedConfig | None = None
    """Train on several processes (torch.distributed DDP or FSDP), e.g. `{nproc: 2}`;
    default: one process."""


def forecast_model_problems(kind: str, inputs: Mapping[str, Facts]) -> Problems:
    """A forecasting kind must consume a forecasting model (one serving the forecast task)."""
    name = inputs.get("model", NO_FACTS).model
    if name is None:
        return []
    try:
        cls = models.get(name)
    except UnknownNameError:
        return []
    if "forecast" in cls.tasks:
        return []
    return [
        (
            (),
            f"stage kind {kind!r} needs a forecasting model (lstm, gru, tcn, nbeats), but its "
            f"model input is {name!r}, which serves {', '.join(sorted(cls.tasks))}",
        )
    ]


@stages.register
class TrainForecast(ModelStageKind):
    """Train a forecasting model on the training windows; keeps the epoch with the best
    validation loss (the last one without validation)."""

    name = "train_forecast"
    config = TrainForecastConfig
    model_artifact = "model"
    produces = "trained_model"
    writes_metrics = True
    tasks = frozenset({"forecast"})
    plots = (PlotSpec("history.json", x="epoch", y=("train_loss", "val_loss"), title="loss"),)

    @classmethod
    def check(cls, config: Any, inputs: Mapping[str, Facts], facts: GraphFacts) -> Problems:
        problems = forecast_model_problems(cls.name, inputs)
        problems += distributed_problems(config.distributed, config.batch_size, facts.device)
        problems += logger_problems(config.loggers)
        needs_val = config.early_stopping is not None or (
            config.scheduler is not None and config.scheduler.needs_metric
        )
        if needs_val and inputs.get("dataset", NO_FACTS).has_val is False:
            problems.append(
                ((), "early stopping and plateau schedules watch val_loss, but split.val is 0")
            )
        return problems

    @classmethod
    def distributed(cls, config: Any) -> DistributedConfig | None:
        return config.distributed

    def run(self, ctx: StageContext) -> None:
        from torchkiln.forecast.train import run_train_forecast

        run_train_forecast(ctx)


class BacktestConfig(Config):
    """Rolling-origin evaluation over the test span (no refitting)."""

    windows: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    """Forecast origins per series: the first at the start of the test span, then every
    `stride` steps (default: as many as fit in the test span). A window that runs past the
    end of the data is scored on the steps that exist."""
    stride: Steps = 1
    """Steps between consecutive origins."""


class EvaluateForecastConfig(StageConfig):
    """Settings of an evaluate_forecast stage."""

    backtest: BacktestConfig = Field(default_factory=BacktestConfig)
    """The rolling-origin backtest."""
    season: Annotated[int, Field(ge=1, le=100_000)] | None = None
    """Season length m of the seasonal naive baseline and of MASE's scale (default: from
    the frequency: 12 monthly, 4 quarterly, 52 weekly, 7 daily, 24 hourly, 1 yearly)."""
    baselines: Annotated[list[Literal["naive", "seasonal_naive", "drift"]], Field(min_length=1)] = (
        Field(default_factory=lambda: ["naive", "seasonal_naive", "drift"])
    )
    """Baselines scored on the same windows; seasonal_naive must be among them (the model's
    MASE is also reported relative to it)."""
    batch_size: Annotated[int, Field(ge=1, le=1_000_000)] = 256
    """Windows per forward pass."""
    context: Annotated[int, Field(ge=0, le=100_000)] | None = None
    """History steps shown before the forecast in the plots (default: 3 horizons)."""

    @model_validator(mode="after")
    def _seasonal_naive_kept(self) -> EvaluateForecastConfig:
        if "seasonal_naive" not in self.baselines:
            raise ValueError("baselines must include seasonal_naive (relative MASE uses it)")
        if len(set(self.baselines)) != len(self.baselines):
            raise ValueError("list each baseline once")
        return self


@stages.register
class EvaluateForecast(ModelStageKind):
    """Score a forecasting model on the test span and on a rolling-origin backtest, side by
    side with naive, seasonal naive and drift on the same windows: MAE, RMSE, sMAPE, MASE,
    interval coverage; plots of the best and worst forecasts and of the error per step."""

    name = "evaluate_forecast"
    config = EvaluateForecastConfig
    model_artifact = "trained_model"
    produces = "evaluation"
    writes_metrics = True
    tasks = frozenset({"forecast"})
    plots = (
        PlotSpec(
            "forecast.json",
            x="step",
            y=("actual", "model", "seasonal_naive"),
            title="test span: forecast against actuals (first series)",
        ),
        PlotSpec(
            "horizon.json",
            x="horizon_step",
            y=("model", "naive", "seasonal_naive", "drift"),
            title="backtest MAE per horizon step",
        ),
        PlotSpec("forecast_best.png"),
        PlotSpec("forecast_worst.png"),
    )

    @classmethod
    def plot_specs(cls, config: Any, inputs: Mapping[str, Facts]) -> tuple[PlotSpec, ...]:
        def fit(p: PlotSpec) -> PlotSpec:
            if p.file != "horizon.json":
                return p
            return p._replace(y=("model", *config.baselines))

        return tuple(fit(p) for p in cls.plots)

    @classmethod
    def check(cls, config: Any, inputs: Mapping[str, Facts], facts: GraphFacts) -> Problems:
        return forecast_model_problems(cls.name, inputs)

    def run(self, ctx: StageContext) -> None:
        from torchkiln.forecast.evaluate import run_evaluate_forecast

        run_evaluate_forecast(ctx)
