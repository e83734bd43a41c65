"""Forecasting networks (torch). Every one is a `ForecastNet`:

    forward(past [B, L, C], series [B], past_covariates [B, L, P] | None,
            future_covariates [B, L + H, F] | None, static [B, S] | None) -> [B, H, C, Q]

on scaled values, predicting the whole horizon at once. `ForecastNet.assemble` builds what
they share: the per-step input sequence (targets, past covariates, the known-future
covariates over the lookback, and the per-series context repeated), the per-series
context vector (static covariates and a learnt series embedding) and the known-future
covariates over the horizon, flattened; and the window's level (and spread) that
`window_norm` takes off the input and puts back on the output.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from torchkiln.data.info import DatasetInfo


@dataclass(frozen=True)
class Dims:
    lookback: int
    horizon: int
    targets: int
    past: int
    future: int
    static: int
    num_series: int
    quantiles: int
    embedding: int

    @property
    def context(self) -> int:
        return self.static + self.embedding

    @property
    def step(self) -> int:
        """Features per lookback step."""
        return self.targets + self.past + self.future + self.context

    @property
    def ahead(self) -> int:
        """Flattened known-future features over the horizon."""
        return self.horizon * self.future

    @property
    def outputs(self) -> int:
        return self.horizon * self.targets * self.quantiles


def dims_of(cfg: Any, info: DatasetInfo) -> Dims:
    extra = info.extra
    num_series = int(extra["num_series"])
    return Dims(
        lookback=int(extra["lookback"]),
        horizon=int(extra["horizon"]),
        targets=len(extra["targets"]),
        past=len(extra["past_covariates"]),
        future=len(extra["future_covariates"]),
        static=len(extra["static_covariates"]),
        num_series=num_series,
        quantiles=len(cfg.quantiles) if cfg.quantiles else 1,
        embedding=cfg.series_embedding if num_series > 1 else 0,
    )


def mlp(sizes: list[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear layers with ReLU (and dropout) between them; none after the last."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class ForecastNet(nn.Module):
    """What every forecasting network shares (see the module docstring)."""

    def __init__(self, cfg: Any, dims: Dims) -> None:
        super().__init__()
        self.dims = dims
        self.window_norm = cfg.window_norm
        #: the quantile levels, or None for a point forecast (read by the loss and export)
        self.quantiles: list[float] | None = list(cfg.quantiles) if cfg.quantiles else None
        self.embedding = nn.Embedding(dims.num_series, dims.embedding) if dims.embedding else None

    def assemble(
        self,
        past: torch.Tensor,
        series: torch.Tensor,
        past_covariates: torch.Tensor | None,
        future_covariates: torch.Tensor | None,
        static: torch.Tensor | None,
    ) -> tuple[
        torch.Tensor, torch.Tensor | None, torch.Tensor | None, tuple[torch.Tensor, torch.Tensor]
    ]:
        """(sequence [B, L, step], context [B, S+E] | None, ahead [B, H*F] | None, the
        window's (level, spread), each [B, 1, C, 1])."""
        lookback = self.dims.lookback
        spread = torch.ones_like(past[:, :1, :])
        if self.window_norm in ("mean", "standard"):
            level = past.mean(dim=1, keepdim=True)
            if self.window_norm == "standard":
                spread = past.std(dim=1, keepdim=True, unbiased=False) + 1e-3
        elif self.window_norm == "last":
            level = past[:, -1:, :]
        else:
            level = torch.zeros_like(past[:, :1, :])
        parts = [(past - level) / spread]
        if past_covariates is not None:
            parts.append(past_covariates)
        ahead = None
        if future_covariates is not None:
            parts.append(future_covariates[:, :lookback])
            ahead = future_covariates[:, lookback:].flatten(1)
        context_parts = []
        if static is not None:
            context_parts.append(static)
        if self.embedding is not None:
            context_parts.append(self.embedding(series))
        context = torch.cat(context_parts, dim=1) if context_parts else None
        if context is not None:
            parts.append(context.unsqueeze(1).expand(-1, lookback, -1))
        sequence = torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]
        return sequence, context, ahead, (level.unsqueeze(-1), spread.unsqueeze(-1))

    def shape_output(
        self, flat: torch.Tensor, norm: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        """[B, H*C*Q] -> [B, H, C, Q], with the window's level (and spread) put back."""
        d = self.dims
        level, spread = norm
        return flat.reshape(-1, d.horizon, d.targets, d.quantiles) * spread + level

    @staticmethod
    def join(*parts: torch.Tensor | None) -> torch.Tensor:
        present = [p for p in parts if p is not None]
        return torch.cat(present, dim=1) if len(present) > 1 else present[0]


class RecurrentForecaster(ForecastNet):
    """LSTM/GRU over the lookback; the last layer's last state (with the known-future
    covariates over the horizon and the series context) goes through the head."""

    def __init__(self, cfg: Any, dims: Dims, kind: str) -> None:
        super().__init__(cfg, dims)
        rnn = nn.LSTM if kind == "lstm" else nn.GRU
        self.rnn = rnn(
            dims.step,
            cfg.hidden,
            num_layers=cfg.layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = mlp([cfg.hidden + dims.ahead + dims.context, *cfg.head, dims.outputs])

    def forward(
        self,
        past: torch.Tensor,
        series: torch.Tensor,
        past_covariates: torch.Tensor | None = None,
        future_covariates: torch.Tensor | None = None,
        static: torch.Tensor | None = None,
    ) -> torch.Tensor:
        sequence, context, ahead, norm = self.assemble(
            past, series, past_covariates, future_covariates, static
        )
        states, _ = self.rnn(sequence)
        last = self.dropout(states[:, -1])
        return self.shape_output(self.head(self.join(last, ahead, context)), norm)


class CausalBlock(nn.Module):
    """Two dilated causal convolutions with a residual connection (TCN, Bai et al. 2018)."""

    def __init__(self, channels_in: int, channels: int, kernel: int, dilation: int, dropout: float):
        super().__init__()
        self.pad = (kernel - 1) * dilation
        self.conv1 = nn.Conv1d(channels_in, channels, kernel, dilation=dilation)
        self.conv2 = nn.Conv1d(channels, channels, kernel, dilation=dilation)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv1d(channels_in, channels, 1) if channels_in != channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dropout(torch.relu(self.conv1(nn.functional.pad(x, (self.pad, 0)))))
        y = self.dropout(torch.relu(self.conv2(nn.functional.pad(y, (self.pad, 0)))))
        return torch.relu(y + (self.skip(x) if self.skip is not None else x))


class TcnForecaster(ForecastNet):
    """Dilated causal convolutions over the lookback; the last step's features go through
    a linear head (with the known-future covariates over the horizon and the context)."""

    def __init__(self, cfg: Any, dims: Dims) -> None:
        super().__init__(cfg, dims)
        blocks = []
        width = dims.step
        for i in range(cfg.blocks):
            blocks.append(CausalBlock(width, cfg.channels, cfg.kernel_size, 2**i, cfg.dropout))
            width = cfg.channels
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(cfg.channels + dims.ahead + dims.context, dims.outputs)

    def forward(
        self,
        past: torch.Tensor,
        series: torch.Tensor,
        past_covariates: torch.Tensor | None = None,
        future_covariates: torch.Tensor | None = None,
        static: torch.Tensor | None = None,
    ) -> torch.Tensor:
        sequence, context, ahead, norm = self.assemble(
            past, series, past_covariates, future_covariates, static
        )
        features = self.blocks(sequence.transpose(1, 2))[:, :, -1]
        return self.shape_output(self.head(self.join(features, ahead, context)), norm)


class NBeatsBlock(nn.Module):
    def __init__(
        self, size_in: int, width: int, layers: int, backcast: int, forecast: int, dropout: float
    ):
        super().__init__()
        self.body = mlp([size_in, *[width] * layers], dropout)
        self.body.append(nn.ReLU())
        self.backcast = nn.Linear(width, backcast)
        self.forecast = nn.Linear(width, forecast)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.backcast(h), self.forecast(h)


class NBeatsForecaster(ForecastNet):
    """Generic N-BEATS (Oreshkin et al. 2020) with covariates: each block reads the residual
    of the target lookback (plus the covariates and the context), subtracts its backcast
    from that residual and adds its forecast to the sum."""

    def __init__(self, cfg: Any, dims: Dims) -> None:
        super().__init__(cfg, dims)
        self.target_size = dims.lookback * dims.targets
        extra = dims.lookback * (dims.past + dims.future) + dims.ahead + dims.context
        self.stack = nn.ModuleList(
            NBeatsBlock(
                self.target_size + extra,
                cfg.width,
                cfg.layers,
                self.target_size,
                dims.outputs,
                cfg.dropout,
            )
            for _ in range(cfg.blocks)
        )

    def forward(
        self,
        past: torch.Tensor,
        series: torch.Tensor,
        past_covariates: torch.Tensor | None = None,
        future_covariates: torch.Tensor | None = None,
        static: torch.Tensor | None = None,
    ) -> torch.Tensor:
        sequence, context, ahead, norm = self.assemble(
            past, series, past_covariates, future_covariates, static
        )
        d = self.dims
        residual = sequence[:, :, : d.targets].flatten(1)
        covariates = sequence[:, :, d.targets : d.targets + d.past + d.future].flatten(1)
        others = [covariates if d.past + d.future else None, ahead, context]
        forecast = torch.zeros(past.shape[0], d.outputs, dtype=past.dtype, device=past.device)
        for block in self.stack:
            backcast, step = block(self.join(residual, *others))
            residual = residual - backcast
            forecast = forecast + step
        return self.shape_output(forecast, norm)


def recurrent(cfg: Any, info: DatasetInfo, kind: str) -> RecurrentForecaster:
    return RecurrentForecaster(cfg, dims_of(cfg, info), kind)


def tcn(cfg: Any, info: DatasetInfo) -> TcnForecaster:
    return TcnForecaster(cfg, dims_of(cfg, info))


def nbeats(cfg: Any, info: DatasetInfo) -> NBeatsForecaster:
    return NBeatsForecaster(cfg, dims_of(cfg, info))
