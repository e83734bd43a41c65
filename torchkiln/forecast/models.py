"""Forecasting models. Configs only; the modules live in forecast/nets.py.

Every forecasting model takes a window of the series as load_series stored it, scaled by
the dataset's scaler (the preprocessor does that, and the exported file contains it):

    model(past [B, lookback, targets], series [B] (int64 series index),
          past_covariates [B, lookback, P] | None,
          future_covariates [B, lookback + horizon, F] | None,
          static [B, S] | None) -> [B, horizon, targets, quantiles]

and predicts the whole horizon at once (direct multi-step output). A model with
`quantiles` predicts those quantiles (trained with the pinball loss: prediction
intervals); otherwise one value per step (the last axis has size 1).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, PositiveInt, field_validator

from torchkiln.data.info import DatasetInfo
from torchkiln.registry import ModelConfig, models

Dropout = Annotated[float, Field(ge=0, lt=1)]


class ForecastModelConfig(ModelConfig):
    """Base of forecasting models: what they share (quantiles, series identity, the
    per-window normalisation). `build(info)` reads lookback, horizon and the covariate
    counts from the dataset description (`info.extra`)."""

    modalities: ClassVar[frozenset[str]] = frozenset({"series"})
    tasks: ClassVar[frozenset[str]] = frozenset({"forecast"})

    quantiles: Annotated[list[float], Field(min_length=1, max_length=99)] | None = None
    """Predict these quantiles (e.g. [0.1, 0.5, 0.9]; 0.5 must be among them: it is the
    point forecast) and train with the pinball loss; the lowest and highest bound the
    prediction interval. Default: one point forecast per step."""
    series_embedding: Annotated[int, Field(ge=0, le=1024)] = 0
    """With many series: learn a vector of this size per series, so the model knows which
    series a window comes from (0: none; static covariates can do the same job)."""
    window_norm: Literal["mean", "standard", "last", "none"] = "mean"
    """Per-window normalisation of the scaled series, undone on the output: `mean`
    subtracts the lookback's mean, `standard` also divides by its standard deviation
    (RevIN: smooth, trending series), `last` subtracts the last value. The network then
    sees levels it has seen before even when the series trends beyond its training range."""

    @field_validator("quantiles")
    @classmethod
    def _quantiles(cls, value: list[float] | None) -> list[float] | None:
        if value is None:
            return value
        if any(not 0 < q < 1 for q in value):
            raise ValueError("quantiles must lie strictly between 0 and 1")
        if sorted(set(value)) != value:
            raise ValueError("list the quantiles once each, in increasing order")
        if 0.5 not in value:
            raise ValueError("include 0.5: the median is the point forecast")
        return value


@models.register
class Lstm(ForecastModelConfig):
    """An LSTM encoder over the lookback; its last state predicts the whole horizon."""

    name: Literal["lstm"] = "lstm"
    hidden: PositiveInt = 64
    """Hidden size of the LSTM."""
    layers: Annotated[int, Field(ge=1, le=8)] = 1
    """Stacked LSTM layers."""
    dropout: Dropout = 0.0
    """Dropout between layers and before the output head."""
    head: Annotated[list[PositiveInt], Field(max_length=4)] = Field(default_factory=list)
    """Hidden widths of the MLP head from the last state to the horizon (default: linear)."""

    def build(self, info: DatasetInfo) -> Any:
        from torchkiln.forecast import nets

        return nets.recurrent(self, info, "lstm")


@models.register
class Gru(ForecastModelConfig):
    """A GRU encoder over the lookback; its last state predicts the whole horizon."""

    name: Literal["gru"] = "gru"
    hidden: PositiveInt = 64
    """Hidden size of the GRU."""
    layers: Annotated[int, Field(ge=1, le=8)] = 1
    """Stacked GRU layers."""
    dropout: Dropout = 0.0
    """Dropout between layers and before the output head."""
    head: Annotated[list[PositiveInt], Field(max_length=4)] = Field(default_factory=list)
    """Hidden widths of the MLP head from the last state to the horizon (default: linear)."""

    def build(self, info: DatasetInfo) -> Any:
        from torchkiln.forecast import nets

        return nets.recurrent(self, info, "gru")


@models.register
class Tcn(ForecastModelConfig):
    """A temporal convolutional network: dilated causal convolutions with residual blocks."""

    name: Literal["tcn"] = "tcn"
    channels: PositiveInt = 32
    """Channels of every convolution."""
    kernel_size: Annotated[int, Field(ge=2, le=16)] = 3
    """Width of each causal convolution."""
    blocks: Annotated[int, Field(ge=1, le=12)] = 4
    """Residual blocks; block i dilates by 2**i (receptive field 1 + (k-1)(2**blocks - 1)*2)."""
    dropout: Dropout = 0.0
    """Dropout inside each block."""

    def build(self, info: DatasetInfo) -> Any:
        from torchkiln.forecast import nets

        return nets.tcn(self, info)


@models.register
class NBeats(ForecastModelConfig):
    """An MLP in the N-BEATS spirit: stacked fully connected blocks, each explaining part of
    the lookback (backcast, subtracted from the next block's input) and adding to the
    forecast."""

    name: Literal["nbeats"] = "nbeats"
    blocks: Annotated[int, Field(ge=1, le=30)] = 3
    """Blocks in the stack."""
    width: PositiveInt = 256
    """Width of every hidden layer."""
    layers: Annotated[int, Field(ge=1, le=8)] = 4
    """Hidden layers per block (N-BEATS uses 4)."""
    dropout: Dropout = 0.0
    """Dropout after each hidden layer."""

    def build(self, info: DatasetInfo) -> Any:
        from torchkiln.forecast import nets

        return nets.nbeats(self, info)
