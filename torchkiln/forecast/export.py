"""What the export stage exports for a forecaster: raw windows in original units in,
forecasts in original units out (`ScaledForecaster`: the dataset's scaling, the network,
the inverse scaling and the quantile ordering, all inside the file).

The exported inputs are `past` [batch, lookback, targets] and `series` [batch] (the series
index; 0 for a single series), then `past_covariates` [batch, lookback, P] and
`future_covariates` [batch, lookback + horizon, F] only when the model has them, so every
exported file has exactly the inputs it uses. The output is `forecast`: [batch, horizon,
targets], or [batch, horizon, targets, quantiles] for a quantile model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from torchkiln.runtime.exporting import ExportTarget


class _Exported(nn.Module):
    def __init__(self, forecaster: nn.Module) -> None:
        super().__init__()
        self.forecaster = forecaster


class PastOnly(_Exported):
    def forward(self, past: torch.Tensor, series: torch.Tensor) -> torch.Tensor:
        return self.forecaster(past, series, None, None)


class WithPast(_Exported):
    def forward(
        self, past: torch.Tensor, series: torch.Tensor, past_covariates: torch.Tensor
    ) -> torch.Tensor:
        return self.forecaster(past, series, past_covariates, None)


class WithFuture(_Exported):
    def forward(
        self, past: torch.Tensor, series: torch.Tensor, future_covariates: torch.Tensor
    ) -> torch.Tensor:
        return self.forecaster(past, series, None, future_covariates)


class WithBoth(_Exported):
    def forward(
        self,
        past: torch.Tensor,
        series: torch.Tensor,
        past_covariates: torch.Tensor,
        future_covariates: torch.Tensor,
    ) -> torch.Tensor:
        return self.forecaster(past, series, past_covariates, future_covariates)


def exported_inputs(extra: dict[str, Any]) -> list[str]:
    """The exported model's input names, in order, for a dataset description."""
    names = ["past", "series"]
    if extra["past_covariates"]:
        names.append("past_covariates")
    if extra["future_covariates"]:
        names.append("future_covariates")
    return names


WRAPPERS: dict[tuple[bool, bool], type[_Exported]] = {
    (False, False): PastOnly,
    (True, False): WithPast,
    (False, True): WithFuture,
    (True, True): WithBoth,
}


def forecast_target(
    model: nn.Module,
    preprocess: Any,
    stored: tuple[torch.Tensor, ...],
    rebuild: Callable[[dict[str, torch.Tensor]], nn.Module],
) -> ExportTarget:
    from torchkiln.runtime.model_artifact import state_for_saving

    extra = preprocess.info.extra
    names = exported_inputs(extra)
    wrapper = WRAPPERS[("past_covariates" in names, "future_covariates" in names)]
    preprocess.scaler.cpu()
    point = not getattr(model, "quantiles", None)

    def wrap(net: nn.Module) -> nn.Module:
        return wrapper(preprocess.forecaster(net.eval())).eval()

    past, series, past_cov, future_cov = (x.cpu() for x in stored)
    by_name = {
        "past": past,
        "series": series,
        "past_covariates": past_cov,
        "future_covariates": future_cov,
    }
    example = tuple(by_name[n] for n in names)
    if example[0].shape[0] < 2:  # a batch of one would fix the batch axis when exporting
        example = tuple(torch.cat([x, x]) for x in example)
    quantiles = getattr(model, "quantiles", None)
    shape = "batch x horizon x targets" + ("" if point else " x quantiles")
    return ExportTarget(
        module=wrap(model),
        example=example,
        input_names=names,
        dynamic_axes={n: {0: "batch"} for n in names},
        output_names=["forecast"],
        rebuild=lambda state: wrap(rebuild(state)),
        weights=state_for_saving(model),
        card={
            "forecast": {
                "lookback": extra["lookback"],
                "horizon": extra["horizon"],
                "frequency": extra["freq"],
                "season": extra["season"],
                "targets": extra["targets"],
                "covariates": {
                    "past": extra["past_covariates"],
                    "future": extra["future_covariates"],
                    "static": extra["static_covariates"],
                },
                "quantiles": quantiles,
                "series": extra["num_series"],
                "inputs": names,
            },
            "output": f"float32 forecasts in original units, {shape}"
            + (f" (quantiles {quantiles}, in increasing order)" if quantiles else ""),
        },
    )
