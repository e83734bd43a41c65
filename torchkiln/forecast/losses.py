"""Forecasting losses: a registry kind of its own (`kiln list forecast_loss`), because a
forecast loss compares a [batch, horizon, targets, quantiles] output with [batch, horizon,
targets] actuals, in the scaled space the model works in, and a quantile model needs the
pinball loss at its own quantile levels.

A plugin adds one like any component:

    @forecast_losses.register
    class LogCosh(ForecastLossConfig):
        name: Literal["logcosh"] = "logcosh"
        def build(self, quantiles): return MyLoss()   # loss(outputs, targets) -> scalar

Configs are light; the torch code lives in forecast/objectives.py.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar, Literal

from pydantic import PositiveFloat

from torchkiln.registry.component import Component
from torchkiln.registry.registry import Registry


class ForecastLossConfig(Component):
    """Builds a loss `loss(outputs [B, H, C, Q], targets [B, H, C]) -> scalar`."""

    #: Whether the loss trains quantiles (pinball); point losses need a point model.
    for_quantiles: ClassVar[bool] = False

    @abstractmethod
    def build(self, quantiles: list[float] | None) -> Any:
        """The loss module for a model predicting `quantiles` (None: a point forecast)."""


forecast_losses: Registry[type[ForecastLossConfig]] = Registry(
    "forecast_loss", "A loss for train_forecast, on scaled values (point or quantile)."
)


@forecast_losses.register
class Mse(ForecastLossConfig):
    """Mean squared error (a point forecast of the mean)."""

    name: Literal["mse"] = "mse"

    def build(self, quantiles: list[float] | None) -> Any:
        from torchkiln.forecast.objectives import PointLoss

        return PointLoss("mse")


@forecast_losses.register
class Mae(ForecastLossConfig):
    """Mean absolute error (a point forecast of the median; robust to outliers)."""

    name: Literal["mae"] = "mae"

    def build(self, quantiles: list[float] | None) -> Any:
        from torchkiln.forecast.objectives import PointLoss

        return PointLoss("mae")


@forecast_losses.register
class Huber(ForecastLossConfig):
    """Huber loss: squared near zero, absolute beyond `delta` (scaled units)."""

    name: Literal["huber"] = "huber"
    delta: PositiveFloat = 1.0
    """Where the loss turns from squared to absolute."""

    def build(self, quantiles: list[float] | None) -> Any:
        from torchkiln.forecast.objectives import PointLoss

        return PointLoss("huber", self.delta)


@forecast_losses.register
class Pinball(ForecastLossConfig):
    """The pinball (quantile) loss at the model's quantiles: prediction intervals."""

    name: Literal["pinball"] = "pinball"
    for_quantiles: ClassVar[bool] = True

    def build(self, quantiles: list[float] | None) -> Any:
        from torchkiln.forecast.objectives import PinballLoss

        return PinballLoss(quantiles or [0.5])
