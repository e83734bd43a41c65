"""The `forecast` task: predict the next `horizon` values of one or more time series."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from torchkiln.registry import TaskConfig, tasks


@tasks.register
class Forecast(TaskConfig):
    """Forecast time series: windows split by time, models judged against naive baselines."""

    name: Literal["forecast"] = "forecast"
    #: `load_data:`, `train:` and `evaluate:` mean the forecasting kinds in a forecast spec
    #: (time-ordered splits in steps, the forecasting loop, backtests with baselines).
    stage_defaults: ClassVar[dict[str, str]] = {
        "load_data": "load_series",
        "train": "train_forecast",
        "evaluate": "evaluate_forecast",
    }

    def export_target(self, model: Any, preprocess: Any, stored: Any, rebuild: Any) -> Any:
        """Raw windows in original units in, forecasts in original units out: the dataset's
        scaling and the quantile ordering are inside the exported file."""
        from torchkiln.forecast.export import forecast_target

        return forecast_target(model, preprocess, stored, rebuild)
