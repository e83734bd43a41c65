"""Forecasting units, in process: windows and split boundaries, the scaler round trip,
baselines and metrics against figures worked out by hand, backtest origins, filling
within splits, frequencies, and the networks' shapes."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from torchkiln.forecast import metrics as fm
from torchkiln.forecast.evaluate import origins_of
from torchkiln.forecast.loading import (
    SeriesStore,
    fit_scaler,
    inverse,
    transform,
    write_series,
)
from torchkiln.forecast.preprocess import SeriesScaler, series_preprocessor
from torchkiln.forecast.table import fill_segments, read_table, season_of
from torchkiln.forecast.tablespec import TableSpec
from torchkiln.runtime.datasets import open_dataset


def _csv(path: Path, values: list[float], start: str = "2000-01") -> Path:
    import pandas as pd

    months = pd.date_range(start, periods=len(values), freq="MS").strftime("%Y-%m")
    rows = ["month,y"] + [f"{m},{v}" for m, v in zip(months, values, strict=True)]
    path.write_text("\n".join(rows) + "\n")
    return path


def _write(tmp_path: Path, values: list[float], **kw: int) -> Path:
    spec = TableSpec(
        source=("file", str(_csv(tmp_path / "s.csv", values))),
        time_column="month",
        targets=["y"],
        time_format="%Y-%m",
    )
    out = tmp_path / "out"
    out.mkdir()
    windows = SimpleNamespace(
        lookback=kw.get("lookback", 4), horizon=kw.get("horizon", 3), stride=kw.get("stride", 2)
    )
    split = SimpleNamespace(val=kw.get("val", 6), test=kw.get("test", 5))
    scaling = SimpleNamespace(method="standard", log=False, per="series")
    write_series(read_table(spec), out, windows, split, scaling, "forecast", {})
    return out


def test_windows_and_split_boundaries(tmp_path: Path) -> None:
    values = [float(v) for v in range(100, 130)]  # 30 months: row i holds 100 + i
    out = _write(tmp_path, values)
    store = SeriesStore.open(out)
    # test = last 5 (rows 25..29), val = the 6 before (19..24), train = 0..18
    assert store.meta["spans"] == [{"length": 30, "val_start": 19, "test_start": 25}]
    origins = {s: store.origins[s][0].tolist() for s in ("train", "val", "test")}
    # training origins step by the stride and end with the last window that fits
    assert origins == {
        "train": [4, 6, 8, 10, 12, 14, 16],
        "val": [19, 20, 21, 22],
        "test": [25, 26, 27],
    }
    data = open_dataset(out)
    assert data.info.counts == {"train": 7, "val": 4, "test": 3}
    train = data.split("train")
    (past, series, pc, fc), targets = train.batch(torch.arange(len(train)))
    assert past.shape == (7, 4, 1) and targets.shape == (7, 3, 1) and pc.shape == (7, 4, 0)
    assert fc.shape == (7, 7, 0) and series.tolist() == [0] * 7
    # past = the 4 values before the origin, targets = the 3 from it
    assert past[0, :, 0].tolist() == [100, 101, 102, 103]
    assert targets[0, :, 0].tolist() == [104, 105, 106]
    # no training target comes from the validation or test span
    assert float(targets.max()) < 100 + 19
    (vpast, *_), vtargets = data.split("val").batch(torch.arange(4))
    assert float(vtargets.min()) >= 119 and float(vtargets.max()) < 125
    assert float(vpast.max()) < 125  # inputs never reach into the test span


def test_too_short_a_series_says_what_it_needs(tmp_path: Path) -> None:
    with pytest.raises(Exception, match=r"has 12 steps, too few for lookback 4 \+ horizon 3"):
        _write(tmp_path, [float(v) for v in range(12)])


def test_backtest_origins_tile_the_test_span_and_roll(tmp_path: Path) -> None:
    store = SeriesStore.open(_write(tmp_path, [float(v) for v in range(30)]))
    rolling = SimpleNamespace(backtest=SimpleNamespace(windows=None, stride=1))
    assert origins_of(store, "test", rolling)[1].tolist() == [25, 28]  # every horizon
    assert origins_of(store, "backtest", rolling)[1].tolist() == [25, 26, 27, 28, 29]
    two = SimpleNamespace(backtest=SimpleNamespace(windows=2, stride=2))
    assert origins_of(store, "backtest", two)[1].tolist() == [25, 27]
    # a window running past the end is scored on the steps that exist
    rows = torch.tensor([28])
    _, targets, valid = store.windows(rows, torch.tensor([0]))
    assert valid[0, :, 0].tolist() == [True, True, False]
    assert targets[0, :2, 0].tolist() == [28.0, 29.0]


@pytest.mark.parametrize("method", ["standard", "minmax", "robust", "none"])
@pytest.mark.parametrize("log", [False, True])
def test_scaler_round_trip(method: str, log: bool) -> None:
    rng = np.random.default_rng(0)
    values = rng.uniform(1, 500, size=(40, 2))
    prepared = np.log1p(values) if log else values
    loc, scale = fit_scaler(prepared, method, log)
    scaled = transform(values, loc, scale, log)
    if method == "standard":
        assert np.allclose(scaled.mean(axis=0), 0) and np.allclose(scaled.std(axis=0), 1)
    if method == "minmax":
        assert np.allclose(scaled.min(axis=0), 0) and np.allclose(scaled.max(axis=0), 1)
    assert np.allclose(inverse(scaled, loc, scale, log), values)
    # the torch module (inside exported models) inverts it too, per series
    scaler = SeriesScaler(
        {
            "log": log,
            "targets": {"loc": [loc.tolist()], "scale": [scale.tolist()]},
            "past": {"loc": [], "scale": []},
            "future": {"loc": [], "scale": []},
            "static": {"loc": [], "scale": [], "values": [[]]},
        }
    )
    x = torch.tensor(values[None], dtype=torch.float32)
    series = torch.tensor([0])
    z = scaler.scale_target(x, series)
    assert np.allclose(z[0].numpy(), scaled, atol=1e-4)
    back = scaler.unscale(z.unsqueeze(-1), series)[..., 0]
    assert torch.allclose(back, x, rtol=1e-4)


def test_scaler_is_fitted_on_the_training_span_only(tmp_path: Path) -> None:
    clean = [float(v % 7) for v in range(30)]
    poisoned = clean[:25] + [1e9] * 5  # the test span
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    a = SeriesStore.open(_write(tmp_path / "a", clean))
    b = SeriesStore.open(_write(tmp_path / "b", poisoned))
    assert a.scaler["targets"] == b.scaler["targets"]
    assert (
        open_dataset(a.folder).info.extra["scaler"] == open_dataset(b.folder).info.extra["scaler"]
    )


def test_baselines_by_hand() -> None:
    history = np.array([1.0, 2, 3, 4, 5, 6])[:, None]
    assert fm.naive(history, 4)[:, 0].tolist() == [6, 6, 6, 6]
    # one season (m = 3) back: 4, 5, 6, then 4 again for the step after a season
    assert fm.seasonal_naive(history, 4, 3)[:, 0].tolist() == [4, 5, 6, 4]
    # slope (6 - 1) / 5 = 1 per step
    assert fm.drift(history, 4)[:, 0].tolist() == [7, 8, 9, 10]
    # shorter than a season: naive
    assert fm.seasonal_naive(history[:2], 2, 3)[:, 0].tolist() == [2, 2]
    # MASE scale: mean |y[t] - y[t-3]| = 3
    assert fm.mase_scale(history, 3).tolist() == [3.0]


def test_metrics_by_hand() -> None:
    actual = np.array([[10.0], [20.0], [99.0]])
    forecast = np.array([[12.0], [15.0], [0.0]])
    valid = np.array([[True], [True], [False]])  # the third point was filled: not scored
    s = fm.point_scores(actual, forecast, valid, np.array([2.0]))
    assert s["mae"][0] == pytest.approx(3.5)
    assert s["rmse"][0] == pytest.approx(np.sqrt(14.5))
    assert s["smape"][0] == pytest.approx((200 * 2 / 22 + 200 * 5 / 35) / 2)
    assert s["mase"][0] == pytest.approx(1.75)
    lower, upper = actual - 1, actual + 1
    upper[1] = 19.0  # the second actual falls outside its interval
    assert fm.coverage(actual, lower, upper, valid) == 0.5
    assert fm.summarise([s, s])["mae"] == pytest.approx(3.5)


def test_seasonal_naive_on_the_airline_test_year() -> None:
    """The figures the issue gives for scale: sMAPE 10.6 %, MASE (m = 12) 1.57."""
    spec = TableSpec(
        source=("torchkiln", "airline.csv"),
        time_column="month",
        targets=["passengers"],
        time_format="%Y-%m",
    )
    y = read_table(spec).series[0].values
    history, test = y[:-12], y[-12:]
    forecast = fm.seasonal_naive(history, 12, 12)
    s = fm.point_scores(test, forecast, np.ones_like(test, dtype=bool), fm.mase_scale(history, 12))
    assert s["smape"][0] == pytest.approx(10.57, abs=0.01)
    assert s["mase"][0] == pytest.approx(1.571, abs=0.001)


def test_fill_stays_within_each_split() -> None:
    column = np.array([1.0, np.nan, 3.0, np.nan, 100.0, np.nan, 7.0])[:, None]
    # cut at 4: the gap at 3 is the end of the first segment: the last value carries over,
    # never interpolated towards the 100 that lies in the next split
    filled, count = fill_segments(column, "interpolate", [4])
    assert count == 3
    assert filled[:, 0].tolist() == [1.0, 2.0, 3.0, 3.0, 100.0, 53.5, 7.0]
    ffilled, _ = fill_segments(column, "ffill", [4])
    assert ffilled[:, 0].tolist() == [1.0, 1.0, 3.0, 3.0, 100.0, 100.0, 7.0]
    zero, _ = fill_segments(column, "zero", [4])
    assert zero[:, 0].tolist() == [1.0, 0.0, 3.0, 0.0, 100.0, 0.0, 7.0]


@pytest.mark.parametrize(
    ("freq", "m"), [("MS", 12), ("QS-JAN", 4), ("W-SAT", 52), ("D", 7), ("h", 24), ("YS", 1)]
)
def test_season_from_frequency(freq: str, m: int) -> None:
    assert season_of(freq) == m


def _info(**extra: object) -> SimpleNamespace:
    base = {
        "lookback": 8,
        "horizon": 4,
        "targets": ["y", "z"],
        "past_covariates": ["p"],
        "future_covariates": ["f1", "f2"],
        "static_covariates": ["s"],
        "num_series": 3,
    }
    base.update(extra)
    return SimpleNamespace(extra=base)


@pytest.mark.parametrize("name", ["lstm", "gru", "tcn", "nbeats"])
def test_every_model_forecasts_the_whole_horizon(name: str) -> None:
    from torchkiln.packs import load_builtins
    from torchkiln.registry import models

    load_builtins()
    cfg = models.get(name).model_validate(
        {"name": name, "quantiles": [0.1, 0.5, 0.9], "series_embedding": 2}
    )
    net = cfg.build(_info())
    b = 5
    out = net(
        torch.randn(b, 8, 2),
        torch.tensor([0, 1, 2, 0, 1]),
        torch.randn(b, 8, 1),
        torch.randn(b, 12, 2),
        torch.randn(b, 1),
    )
    assert out.shape == (b, 4, 2, 3)
    point = (
        models.get(name)
        .model_validate({"name": name})
        .build(_info(past_covariates=[], future_covariates=[], static_covariates=[], num_series=1))
    )
    assert point(torch.randn(b, 8, 2), torch.zeros(b, dtype=torch.long)).shape == (b, 4, 2, 1)


def test_quantile_models_must_include_the_median() -> None:
    from pydantic import ValidationError

    from torchkiln.forecast.models import Lstm

    with pytest.raises(ValidationError, match=r"include 0\.5"):
        Lstm(quantiles=[0.1, 0.9])
    with pytest.raises(ValidationError, match="increasing order"):
        Lstm(quantiles=[0.9, 0.5])


def test_pinball_loss_by_hand() -> None:
    from torchkiln.forecast.objectives import PinballLoss

    loss = PinballLoss([0.1, 0.9])
    out = torch.tensor([[[[1.0, 3.0]]]])  # one step, one target, two quantiles
    target = torch.tensor([[[2.0]]])
    # e = 2 - 1 = 1 at q 0.1 -> 0.1; e = 2 - 3 = -1 at q 0.9 -> 0.1; mean 0.1
    assert float(loss(out, target)) == pytest.approx(0.1)


def test_the_preprocessor_comes_from_the_dataset_description(tmp_path: Path) -> None:
    out = _write(tmp_path, [float(v) for v in range(1, 31)])
    info = open_dataset(out).info
    prep = series_preprocessor(info, None)
    x = torch.arange(1.0, 9.0).reshape(2, 4, 1)
    series = torch.zeros(2, dtype=torch.long)
    past, _, pc, fc, static = prep.train_inputs(
        (x, series, torch.zeros(2, 4, 0), torch.zeros(2, 7, 0))
    )
    assert pc is None and fc is None and static is None
    loc, scale = (
        info.extra["scaler"]["targets"]["loc"][0][0],
        info.extra["scaler"]["targets"]["scale"][0][0],
    )
    assert torch.allclose(past, (x - loc) / scale)
