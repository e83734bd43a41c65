"""The preprocessor of the "series" modality (registered by the forecast pack's `__init__`).

Series are stored in original units; the dataset's scaler (`scaler.json`, fitted on the
training spans) turns a stored window into what the network sees and the network's output
back into original units. `ScaledForecaster` is that whole path (scale, network, unscale,
order the quantiles): evaluate scores it and export writes it, so the exported file takes
raw windows and returns forecasts in original units, computing exactly what was scored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchkiln.data.info import DatasetInfo
from torchkiln.errors import RunError
from torchkiln.io import atomic_copy
from torchkiln.runtime.exporting import ExportTarget
from torchkiln.runtime.preprocess import Preprocessor, Rebuild

#: what the export folder needs besides the model to forecast from a table (kiln predict)
EXPORT_FILES = ("series.json", "scaler.json")


class SeriesScaler(nn.Module):
    """Scales targets per series (log1p first when asked), standardises covariates, and
    looks up each series' static covariates; all as buffers, so exports carry them."""

    def __init__(self, scaler: dict[str, Any]) -> None:
        super().__init__()
        static = torch.tensor(scaler["static"]["values"], dtype=torch.float32)
        self.log = bool(scaler["log"])
        loc = torch.tensor(scaler["targets"]["loc"], dtype=torch.float32)
        scale = torch.tensor(scaler["targets"]["scale"], dtype=torch.float32)
        self.register_buffer("loc", loc)  # [series, C]
        self.register_buffer("scale", scale)
        self.past_width = len(scaler["past"]["loc"])
        self.future_width = len(scaler["future"]["loc"])
        self.static_width = len(scaler["static"]["loc"])
        for name in ("past", "future"):
            self.register_buffer(f"{name}_loc", torch.tensor(scaler[name]["loc"]).float())
            self.register_buffer(f"{name}_scale", torch.tensor(scaler[name]["scale"]).float())
        s_loc = torch.tensor(scaler["static"]["loc"], dtype=torch.float32)
        s_scale = torch.tensor(scaler["static"]["scale"], dtype=torch.float32)
        if self.static_width:
            table = (static - s_loc) / s_scale
        else:
            table = torch.zeros(len(scaler["targets"]["loc"]), 0)
        self.register_buffer("static_table", table)

    def scale_target(self, values: torch.Tensor, series: torch.Tensor) -> torch.Tensor:
        """[B, T, C] original units -> the network's space."""
        x = torch.log1p(values) if self.log else values
        return (x - self.loc[series].unsqueeze(1)) / self.scale[series].unsqueeze(1)

    def unscale(self, outputs: torch.Tensor, series: torch.Tensor) -> torch.Tensor:
        """[B, H, C, Q] network space -> original units."""
        loc = self.loc[series][:, None, :, None]
        scale = self.scale[series][:, None, :, None]
        x = outputs * scale + loc
        return torch.expm1(x) if self.log else x

    def forward(
        self,
        past: torch.Tensor,
        series: torch.Tensor,
        past_covariates: torch.Tensor | None = None,
        future_covariates: torch.Tensor | None = None,
    ) -> tuple[Any, ...]:
        """Raw inputs -> the network's `(past, series, past_covariates, future_covariates,
        static)`, absent ones as None."""
        pc = fc = static = None
        if self.past_width and past_covariates is not None:
            pc = (past_covariates - self.past_loc) / self.past_scale
        if self.future_width and future_covariates is not None:
            fc = (future_covariates - self.future_loc) / self.future_scale
        if self.static_width:
            static = self.static_table[series]
        return self.scale_target(past, series), series, pc, fc, static


class ScaledForecaster(nn.Module):
    """Raw windows -> forecasts in original units: scale, network, unscale, and the
    quantiles put in increasing order (a quantile model may cross them slightly). Returns
    [B, horizon, targets] for a point model, [B, horizon, targets, quantiles] otherwise."""

    def __init__(self, scaler: SeriesScaler, model: nn.Module, point: bool) -> None:
        super().__init__()
        self.scaler, self.model, self.point = scaler, model, point

    def forward(
        self,
        past: torch.Tensor,
        series: torch.Tensor,
        past_covariates: torch.Tensor | None = None,
        future_covariates: torch.Tensor | None = None,
    ) -> torch.Tensor:
        out = self.scaler.unscale(
            self.model(*self.scaler(past, series, past_covariates, future_covariates)), series
        )
        if self.point:
            return out[..., 0]
        return torch.sort(out, dim=-1).values


class SeriesPreprocessor(Preprocessor):
    """Stored windows (original units) -> scaled network inputs; scaling of the targets."""

    def __init__(self, info: DatasetInfo, scaler: SeriesScaler) -> None:
        self.info, self.scaler = info, scaler

    def to(self, device: torch.device | str) -> SeriesPreprocessor:
        self.scaler = self.scaler.to(device)
        return self

    def train_inputs(self, inputs: tuple[torch.Tensor, ...]) -> tuple[Any, ...]:
        return self.scaler(*inputs)

    def eval_inputs(self, inputs: tuple[torch.Tensor, ...]) -> tuple[Any, ...]:
        return self.scaler(*inputs)

    def scale_target(self, targets: torch.Tensor, series: torch.Tensor) -> torch.Tensor:
        return self.scaler.scale_target(targets, series)

    def forecaster(self, model: nn.Module) -> ScaledForecaster:
        """The model behind this scaling, in original units (what is scored and exported)."""
        return ScaledForecaster(self.scaler, model, point=not getattr(model, "quantiles", None))

    def export_target(
        self, model: nn.Module, stored: tuple[torch.Tensor, ...], rebuild: Rebuild
    ) -> ExportTarget:
        from torchkiln.forecast.export import forecast_target

        return forecast_target(model, self, stored, rebuild)

    def export_files(self, dataset_dir: Path, out_dir: Path) -> list[str]:
        """The series description and scaler, so `kiln predict` reads a table exactly as
        load_series did (columns, time format, frequency, fill) and knows the series ids."""
        for name in EXPORT_FILES:
            atomic_copy(dataset_dir / name, out_dir / name)
        return list(EXPORT_FILES)

    def describe(self) -> dict[str, Any]:
        extra = self.info.extra
        return {
            "input": "raw windows in original units: past float32 [batch, lookback, targets], "
            "series int64 [batch] (the series index, see series.json), past_covariates float32 "
            "[batch, lookback, P] and future_covariates float32 [batch, lookback + horizon, F] "
            "when the model has them",
            "lookback": extra["lookback"],
            "horizon": extra["horizon"],
            "frequency": extra["freq"],
            "season": extra["season"],
            "targets": extra["targets"],
            "time_column": extra["time_column"],
            "id_column": extra["id_column"],
            "series": extra["num_series"],
            "covariates": {
                "past": extra["past_covariates"],
                "future": extra["future_covariates"],
                "static": extra["static_covariates"],
            },
            "scaling": {**extra["scaling"], "inside the exported model": True},
            "files": "series.json (columns, frequency, series ids) and scaler.json",
            "usage": {
                "prepare": "past = torch.tensor(last_values).reshape(1, "
                f"{extra['lookback']}, {len(extra['targets'])})   # the last "
                f"{extra['lookback']} values, original units\n"
                "series = torch.tensor([0])                    # index into series.json's ids",
                "footer": "# or, from a shell: "
                "kiln predict pipelines/<name>.yaml --file series.csv",
            },
        }


def series_preprocessor(info: DatasetInfo, transforms_dir: Path | None) -> SeriesPreprocessor:
    """The preprocessor for series, from the scaler the dataset description carries
    (`info.extra['scaler']`, also in every model artifact built from it). An augment
    stage's image transforms do not apply."""
    if "scaler" not in info.extra:
        raise RunError("this series dataset description carries no scaler; rerun load_series")
    return SeriesPreprocessor(info, SeriesScaler(info.extra["scaler"]))
