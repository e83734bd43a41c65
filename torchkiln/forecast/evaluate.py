"""evaluate_forecast at run time: the test span and a rolling-origin backtest, the model
side by side with naive, seasonal naive and drift on exactly the same windows.

- test: windows that tile each series' test span (origins at its start, then every
  `horizon` steps): every test step is forecast once (the "test year" of a monthly series
  with `test: 12`, `horizon: 12`).
- backtest: origins at the start of the test span, then every `stride` steps, for
  `windows` origins (default: all that fit); a window running past the end of the data is
  scored on the steps that exist. The model is not refitted: it never saw any test value,
  and at each origin it (and every baseline) sees the actual values up to that origin.

The model is scored as exported: raw windows through the scaler, the network and back
(`ScaledForecaster`). Filled values (load_series' `fill:`) are never scored.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchkiln.errors import RunError
from torchkiln.forecast import metrics as fm
from torchkiln.forecast.loading import SeriesStore
from torchkiln.forecast.preprocess import SeriesPreprocessor
from torchkiln.io import atomic_write_bytes, atomic_write_text, write_json
from torchkiln.runtime.context import StageContext
from torchkiln.runtime.datasets import open_dataset
from torchkiln.runtime.device import resolve_device
from torchkiln.runtime.model_artifact import open_model
from torchkiln.runtime.preprocess import preprocessor_for
from torchkiln.runtime.progress import log


@dataclass
class Part:
    """The forecasts of one evaluation (test or backtest), window by window."""

    name: str
    series: np.ndarray  # [W] series index
    origins: np.ndarray  # [W] origin within its series
    actual: np.ndarray  # [W, H, C]
    valid: np.ndarray  # [W, H, C]
    model: np.ndarray  # [W, H, C] point forecast
    #: [W, H, C, Q] quantile forecasts (None for a point model)
    quantiles: np.ndarray | None
    baselines: dict[str, np.ndarray] = field(default_factory=dict)

    def methods(self) -> dict[str, np.ndarray]:
        return {"model": self.model, **self.baselines}


def origins_of(store: SeriesStore, part: str, cfg: Any) -> tuple[np.ndarray, np.ndarray]:
    """(series index, origin within the series) of every window of a part."""
    horizon = store.horizon
    series, origins = [], []
    for i, span in enumerate(store.meta["spans"]):
        start, length = span["test_start"], span["length"]
        if part == "test":
            chosen = list(range(start, length, horizon))
        else:
            chosen = list(range(start, length, cfg.backtest.stride))
            if cfg.backtest.windows is not None:
                chosen = chosen[: cfg.backtest.windows]
        series += [i] * len(chosen)
        origins += chosen
    return np.array(series, dtype=np.int64), np.array(origins, dtype=np.int64)


@torch.no_grad()
def forecast(
    forecaster: torch.nn.Module,
    store: SeriesStore,
    series: np.ndarray,
    origins: np.ndarray,
    device: torch.device,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(forecasts in original units, actuals, valid) for the windows, float64."""
    s = torch.from_numpy(series)
    rows = torch.from_numpy(origins) + store.offsets[s]
    inputs, targets, valid = store.windows(rows, s)
    outputs = []
    for start in range(0, len(s), batch_size):
        batch = tuple(x[start : start + batch_size].to(device) for x in inputs)
        outputs.append(forecaster(*batch).double().cpu())
    return torch.cat(outputs).numpy(), targets.double().numpy(), valid.numpy()


def score(
    part: Part, store: SeriesStore, m: int, quantile_levels: list[float] | None
) -> dict[str, Any]:
    """Metrics of the model and every baseline on a part, and the relative MASE."""
    values = store.values.numpy()
    results: dict[str, Any] = {
        "windows": len(part.origins),
        "points": int(part.valid.sum()),
    }
    per_method: dict[str, list[dict[str, np.ndarray]]] = {k: [] for k in part.methods()}
    for i in range(store.num_series):
        mine = part.series == i
        if not mine.any():
            continue
        history = values[store.series(i)][: store.meta["spans"][i]["test_start"]]
        scale = fm.mase_scale(history, m)
        actual = part.actual[mine].reshape(-1, part.actual.shape[-1])
        valid = part.valid[mine].reshape(actual.shape)
        for name, predicted in part.methods().items():
            flat = predicted[mine].reshape(actual.shape)
            per_method[name].append(fm.point_scores(actual, flat, valid, scale))
    for name, scores in per_method.items():
        results[name] = fm.summarise(scores)
    if part.quantiles is not None and quantile_levels:
        results["model"]["coverage"] = round(
            fm.coverage(part.actual, part.quantiles[..., 0], part.quantiles[..., -1], part.valid), 6
        )
    model, seasonal = results["model"]["mase"], results["seasonal_naive"]["mase"]
    results["mase_vs_seasonal_naive"] = (
        round(model / seasonal, 6) if model is not None and seasonal else None
    )
    return results


def per_step(part: Part) -> list[dict[str, Any]]:
    """MAE at each horizon step, per method (mean over series and columns)."""
    rows = []
    for h in range(part.actual.shape[1]):
        row: dict[str, Any] = {"horizon_step": h + 1}
        for name, predicted in part.methods().items():
            maes = []
            for i in np.unique(part.series):
                mine = part.series == i
                valid = part.valid[mine, h]
                if valid.any():
                    err = np.abs(predicted[mine, h] - part.actual[mine, h])[valid]
                    maes.append(err.mean())
            row[name] = round(float(np.mean(maes)), 6) if maes else None
        rows.append(row)
    return rows


def _times(store: SeriesStore, i: int) -> Any:
    """The timestamps of series i (computed once per series)."""
    import pandas as pd

    cache = store.times
    if i not in cache:
        meta = store.meta
        cache[i] = pd.date_range(
            meta["starts"][i], periods=meta["spans"][i]["length"], freq=meta["freq"]
        )
    return cache[i]


def _value(x: float) -> float | None:
    return None if math.isnan(x) else round(float(x), 6)


def test_rows(part: Part, store: SeriesStore) -> list[dict[str, Any]]:
    """The first series' test span, step by step (the DVC plot of forecast vs actuals)."""
    times = _times(store, 0)
    rows = []
    step = 0
    for w in np.flatnonzero(part.series == 0):
        for h in range(part.actual.shape[1]):
            if part.origins[w] + h >= len(times):
                continue
            step += 1
            row: dict[str, Any] = {
                "step": step,
                "time": times[part.origins[w] + h].isoformat(),
                "actual": _value(part.actual[w, h, 0]) if part.valid[w, h, 0] else None,
                "model": _value(part.model[w, h, 0]),
                "seasonal_naive": _value(part.baselines["seasonal_naive"][w, h, 0]),
            }
            if part.quantiles is not None:
                row["lower"] = _value(part.quantiles[w, h, 0, 0])
                row["upper"] = _value(part.quantiles[w, h, 0, -1])
            rows.append(row)
    return rows


def forecasts_csv(parts: list[Part], store: SeriesStore, levels: list[float] | None) -> str:
    targets = store.meta["table"]["targets"]
    quantile_columns = [f"q{q:g}" for q in levels] if levels else []
    baselines = list(parts[0].baselines)
    header = ["part", "series", "origin", "step", "time", "target", "actual", "model"]
    lines = [",".join(header + quantile_columns + baselines)]
    ids = store.meta["ids"]
    for part in parts:
        for w in range(len(part.origins)):
            i = int(part.series[w])
            times = _times(store, i)
            stamps = [
                t.isoformat()
                for t in times[part.origins[w] : part.origins[w] + part.actual.shape[1]]
            ]
            for h, stamp in enumerate(stamps):
                for c, target in enumerate(targets):
                    actual = f"{part.actual[w, h, c]:.6g}" if part.valid[w, h, c] else ""
                    cells = [
                        part.name,
                        ids[i],
                        stamps[0],
                        str(h + 1),
                        stamp,
                        target,
                        actual,
                        f"{part.model[w, h, c]:.6g}",
                    ]
                    if part.quantiles is not None:
                        cells += [f"{v:.6g}" for v in part.quantiles[w, h, c]]
                    cells += [f"{part.baselines[b][w, h, c]:.6g}" for b in baselines]
                    lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


def _window_error(part: Part, w: int) -> float:
    valid = part.valid[w]
    return float(np.abs(part.model[w] - part.actual[w])[valid].mean()) if valid.any() else math.nan


def plot_png(
    path: Path,
    store: SeriesStore,
    part: Part,
    windows: list[int],
    title: str,
    context: int,
) -> None:
    """History before the first window, then actuals, the model (with its interval band)
    and the seasonal naive forecast over the windows; first target column."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    i = int(part.series[windows[0]])
    times = _times(store, i)
    values = store.values[store.series(i)].numpy()[:, 0]
    observed = store.observed[store.series(i)].numpy()[:, 0]
    first = int(part.origins[windows[0]])
    last = min(int(part.origins[windows[-1]]) + part.actual.shape[1], len(times))
    start = max(0, first - context)
    fig, ax = plt.subplots(figsize=(9, 4), dpi=100)
    shown = np.where(observed[start:last], values[start:last], np.nan)
    ax.plot(times[start:last], shown, color="black", linewidth=1.2, label="actual")
    for k, w in enumerate(windows):
        steps = min(part.actual.shape[1], len(times) - int(part.origins[w]))
        t = times[int(part.origins[w]) : int(part.origins[w]) + steps]
        if part.quantiles is not None:
            ax.fill_between(
                t,
                part.quantiles[w, :steps, 0, 0],
                part.quantiles[w, :steps, 0, -1],
                color="tab:blue",
                alpha=0.2,
                label="interval" if k == 0 else None,
            )
        ax.plot(t, part.model[w, :steps, 0], color="tab:blue", label="model" if k == 0 else None)
        ax.plot(
            t,
            part.baselines["seasonal_naive"][w, :steps, 0],
            color="tab:orange",
            linestyle="--",
            label="seasonal naive" if k == 0 else None,
        )
    ax.axvline(times[first], color="grey", linewidth=0.8, linestyle=":")
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(store.meta["table"]["targets"][0])
    ax.legend(loc="upper left", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def best_and_worst(
    part: Part, test: Part, test_scores: dict[str, Any], store: SeriesStore, m: int
) -> list[tuple[str, Part, list[int], str]]:
    """What the two PNGs show: with one series, its best and worst backtest windows (by
    the model's MAE); with several, the best and worst series' test spans (by MASE)."""
    times0 = _times(store, int(part.series[0])) if len(part.series) else None
    if store.num_series == 1:
        errors = [_window_error(part, w) for w in range(len(part.origins))]
        order = [w for w in np.argsort(errors, kind="stable") if not math.isnan(errors[w])]
        if not order:
            return []
        picks = []
        for label, w in (("best", order[0]), ("worst", order[-1])):
            origin = times0[int(part.origins[w])].date() if times0 is not None else ""
            picks.append(
                (
                    label,
                    part,
                    [int(w)],
                    f"{label} backtest window: origin {origin}, MAE {errors[w]:.4g}",
                )
            )
        return picks
    values = store.values.numpy()
    scored = []
    for i in range(store.num_series):
        mine = np.flatnonzero(test.series == i)
        if not len(mine):
            continue
        history = values[store.series(i)][: store.meta["spans"][i]["test_start"]]
        scale = fm.mase_scale(history, m)
        actual = test.actual[mine].reshape(-1, test.actual.shape[-1])
        s = fm.point_scores(
            actual,
            test.model[mine].reshape(actual.shape),
            test.valid[mine].reshape(actual.shape),
            scale,
        )
        mase = fm.mean_of([s["mase"]])
        mae = fm.mean_of([s["mae"]])
        key = mase if mase is not None else (mae if mae is not None else math.inf)
        scored.append((key, i, mine, mase, mae))
    scored.sort(key=lambda x: (x[0], x[1]))
    ids = store.meta["ids"]
    picks = []
    for label, (_, i, mine, mase, mae) in (("best", scored[0]), ("worst", scored[-1])):
        what = f"MASE {mase:.3g}" if mase is not None else f"MAE {mae:.4g}"
        picks.append(
            (label, test, [int(w) for w in mine], f"{label} series {ids[i]!r}: test span, {what}")
        )
    return picks


def run_evaluate_forecast(ctx: StageContext) -> None:
    cfg = ctx.config
    device = resolve_device(ctx.device, deterministic=ctx.deterministic)
    data = open_dataset(ctx.input("dataset"))
    if data.info.modality != "series":
        raise RunError(
            "evaluate_forecast scores forecasts of time series; this dataset is "
            f"{data.info.modality}"
        )
    store = SeriesStore.open(data.folder)
    m = cfg.season or int(data.info.extra["season"])
    model = open_model(ctx.input("model")).build().to(device).eval()
    preprocess = preprocessor_for(data.info, None).to(device)
    assert isinstance(preprocess, SeriesPreprocessor)
    forecaster = preprocess.forecaster(model).eval()
    levels = getattr(model, "quantiles", None)
    values = store.values.numpy()
    parts = []
    for name in ("test", "backtest"):
        series, origins = origins_of(store, name, cfg)
        if len(origins) == 0:
            raise RunError("the test span holds no forecast origin")
        out, actual, valid = forecast(forecaster, store, series, origins, device, cfg.batch_size)
        point = out if not levels else out[..., levels.index(0.5)]
        part = Part(name, series, origins, actual, valid, point, out if levels else None)
        for b in cfg.baselines:
            part.baselines[b] = np.stack(
                [
                    fm.baseline(b, values[store.series(int(i))][: int(o)], store.horizon, m)
                    for i, o in zip(series, origins, strict=True)
                ]
            )
        parts.append(part)
    test, backtest = parts
    results: dict[str, Any] = {"season": m}
    for part in parts:
        results[part.name] = score(part, store, m, levels)
    if levels:
        results["interval"] = {
            "lower": levels[0],
            "upper": levels[-1],
            "nominal": round(levels[-1] - levels[0], 6),
        }
    ctx.plots_dir.mkdir(parents=True, exist_ok=True)
    write_json(ctx.plots_dir / "forecast.json", test_rows(test, store))
    write_json(ctx.plots_dir / "horizon.json", per_step(backtest))
    context = cfg.context if cfg.context is not None else 3 * store.horizon
    for label, part, windows, title in best_and_worst(backtest, test, results["test"], store, m):
        plot_png(ctx.plots_dir / f"forecast_{label}.png", store, part, windows, title, context)
    atomic_write_text(ctx.out_dir / "forecasts.csv", forecasts_csv(parts, store, levels))
    write_json(ctx.out_dir / "metrics.json", headline(results))
    write_json(ctx.metrics_path, results)
    for part in parts:
        r = results[part.name]
        shown = " | ".join(
            f"{who} sMAPE {r[who]['smape']:.2f} %, MASE {_fmt(r[who]['mase'])}"
            for who in ("model", *cfg.baselines)
        )
        log(f"{part.name} ({r['windows']} windows, {r['points']} points, m={m}): {shown}")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """Flat numbers for the model card: the model's, seasonal naive's, the ratio."""
    flat: dict[str, Any] = {"season": results["season"]}
    for part in ("test", "backtest"):
        r = results[part]
        for key, value in r["model"].items():
            flat[f"{part}_{key}"] = value
        for key in ("smape", "mase"):
            flat[f"{part}_seasonal_naive_{key}"] = r["seasonal_naive"][key]
        flat[f"{part}_mase_vs_seasonal_naive"] = r["mase_vs_seasonal_naive"]
    return flat
