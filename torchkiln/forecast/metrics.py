"""Baselines and forecast metrics (numpy only: small, exact, easy to check by hand).

Baselines forecast `horizon` steps from the history before an origin (every value up to
it, as a forecaster standing there would have):

- naive: the last value, repeated;
- seasonal naive: the value one season earlier, ŷ[T+h] = y[T+h-m(k+1)], k = (h-1) // m
  (naive when the history is shorter than a season);
- drift: the last value plus h times the average change over the history,
  ŷ[T+h] = y[T] + h (y[T] - y[1]) / (T - 1).

Metrics are computed per series and target column over the points that exist and were
observed (not filled), then averaged over series and columns:

- MAE, RMSE;
- sMAPE = mean of 200 |y - ŷ| / (|y| + |ŷ|), in % (0 where both are 0);
- MASE = MAE / the in-sample MAE of the seasonal naive forecast with season m over the
  history before the test span (Hyndman & Koehler 2006);
- coverage: the share of actuals inside [lowest quantile, highest quantile].
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

BASELINES = ("naive", "seasonal_naive", "drift")


def naive(history: np.ndarray, horizon: int) -> np.ndarray:
    """[horizon, C]: the last value of `history` [T, C], repeated."""
    return np.repeat(history[-1:], horizon, axis=0)


def seasonal_naive(history: np.ndarray, horizon: int, m: int) -> np.ndarray:
    """[horizon, C]: the value one season before each step (naive if T < m)."""
    t = len(history)
    if m <= 1 or t < m:
        return naive(history, horizon)
    steps = np.arange(horizon)
    return history[t - m + steps % m]


def drift(history: np.ndarray, horizon: int) -> np.ndarray:
    """[horizon, C]: the straight line through the first and the last value, extended."""
    t = len(history)
    if t < 2:
        return naive(history, horizon)
    slope = (history[-1] - history[0]) / (t - 1)
    return history[-1] + np.arange(1, horizon + 1)[:, None] * slope


def baseline(name: str, history: np.ndarray, horizon: int, m: int) -> np.ndarray:
    if name == "naive":
        return naive(history, horizon)
    if name == "seasonal_naive":
        return seasonal_naive(history, horizon, m)
    if name == "drift":
        return drift(history, horizon)
    raise ValueError(f"unknown baseline {name!r}")


def mase_scale(history: np.ndarray, m: int) -> np.ndarray:
    """[C]: mean |y[t] - y[t-m]| over the history (NaN where it is too short or flat)."""
    if len(history) <= m:
        return np.full(history.shape[1], np.nan)
    scale = np.abs(history[m:] - history[:-m]).mean(axis=0)
    return np.where(scale > 0, scale, np.nan)


def point_scores(
    actual: np.ndarray, forecast: np.ndarray, valid: np.ndarray, scale: np.ndarray
) -> dict[str, np.ndarray]:
    """Per target column [C] scores of one series over its points ([K, C] each)."""
    n = valid.sum(axis=0)
    err = np.where(valid, forecast - actual, 0.0)
    denominator = np.abs(actual) + np.abs(forecast)
    ratio = np.where(
        valid & (denominator > 0),
        200 * np.abs(err) / np.where(denominator > 0, denominator, 1),
        0.0,
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        mae = np.abs(err).sum(axis=0) / n
        return {
            "mae": mae,
            "rmse": np.sqrt((err**2).sum(axis=0) / n),
            "smape": ratio.sum(axis=0) / n,
            "mase": mae / scale,
        }


def coverage(actual: np.ndarray, lower: np.ndarray, upper: np.ndarray, valid: np.ndarray) -> float:
    inside = (actual >= lower) & (actual <= upper) & valid
    count = int(valid.sum())
    return float(inside.sum() / count) if count else math.nan


def mean_of(values: list[np.ndarray]) -> float | None:
    """The mean over series and columns, ignoring NaN (None when nothing is left)."""
    flat = np.concatenate([np.atleast_1d(v) for v in values]) if values else np.array([])
    flat = flat[~np.isnan(flat)]
    return float(flat.mean()) if flat.size else None


def summarise(per_series: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Scores averaged over series and columns."""
    keys = ("mae", "rmse", "smape", "mase")
    return {k: _round(mean_of([s[k] for s in per_series])) for k in keys}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
