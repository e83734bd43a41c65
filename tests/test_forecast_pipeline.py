"""Forecasting end to end through the real `kiln`: a tiny table of two shops with past,
known-future and static covariates through load_series, build_model, train_forecast,
evaluate_forecast and export; export parity; `kiln predict` on a CSV; the leakage check
(a poisoned test span leaves training unchanged); every bad-table case as a clear error
with its exit code and no traceback.

A local helper runs the venv's `kiln` (independent of the shared test helpers)."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

KILN = Path(sys.executable).parent / "kiln"
MONTHS = 48
TEST, VAL, HORIZON, LOOKBACK = 8, 6, 6, 12


def kiln(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "NO_COLOR": "1"}
    env.pop("KILN_DEBUG", None)
    return subprocess.run(
        [str(KILN), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def month(i: int) -> str:
    return f"{2000 + i // 12}-{i % 12 + 1:02d}"


def rows(poison: bool = False) -> list[list[str]]:
    """Two shops, 48 months each: seasonal sales lifted by a promotion (known ahead),
    a temperature (past-only) and a shop size (static)."""
    out = [["month", "shop", "sales", "temp", "promo", "size"]]
    for shop, size, level in (("north", 3, 100.0), ("south", 5, 180.0)):
        for i in range(MONTHS):
            promo = 1 if i % 5 == 0 else 0
            temp = 10 + 8 * math.sin(2 * math.pi * i / 12)
            sales = level + 0.8 * i + 15 * math.sin(2 * math.pi * i / 12) + 20 * promo
            if poison and i >= MONTHS - TEST:
                sales *= 1e6
            out.append([month(i), shop, f"{sales:.3f}", f"{temp:.2f}", str(promo), str(size)])
    return out


def write_csv(path: Path, table: list[list[str]]) -> None:
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(table)


SPEC = """\
name: {name}
task: forecast
seed: 0
stages:
  load_data:
    dataset:
      name: csv_series
      path: {path}
      time_column: month
      targets: [sales]
      id_column: shop
      covariates: {{past: [temp], future: [promo], static: [size]}}
    windows: {{lookback: {lookback}, horizon: {horizon}}}
    split: {{val: {val}, test: {test}}}
    scaling: {{method: standard, log: true}}
  build_model:
    model: {{name: tcn, channels: 8, blocks: 2, quantiles: [0.1, 0.5, 0.9], series_embedding: 2}}
  train:
    epochs: 4
    batch_size: 16
    optimizer: {{name: AdamW, lr: 3.0e-3}}
  evaluate:
    backtest: {{windows: 4, stride: 2}}
  export:
    formats: [torchscript, {{name: onnx, tolerance: 1.0e-3}}, safetensors]
"""


def spec(name: str, path: str) -> str:
    return SPEC.format(name=name, path=path, lookback=LOOKBACK, horizon=HORIZON, val=VAL, test=TEST)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """The `shop` pipeline run through export, and `poisoned` (the same data with the
    test span multiplied by a million) through train: built once for all xdist workers
    (a file lock in the session's shared temporary folder), since it is the slow part."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    root = (base.parent if worker_id != "master" else base) / "forecast-shop"
    with FileLock(f"{root}.lock"):
        if not (root / "built").exists():
            root.mkdir(exist_ok=True)
            _build(root)
            (root / "built").write_text("ok\n")
    return root


def _build(root: Path) -> None:
    write_csv(root / "sales.csv", rows())
    write_csv(root / "poisoned.csv", rows(poison=True))
    (root / "shop.yaml").write_text(spec("shop", "sales.csv"))
    (root / "poisoned.yaml").write_text(spec("poisoned", "poisoned.csv"))
    ok(kiln("run", "shop.yaml", cwd=root))
    ok(
        kiln(
            "run",
            "poisoned.yaml",
            "--stage",
            "load_data",
            "--stage",
            "build_model",
            "--stage",
            "train",
            cwd=root,
        )
    )


def test_the_pipeline_writes_every_stage(shop: Path) -> None:
    runs = shop / "runs" / "shop"
    meta = json.loads((runs / "load_data/out/meta.json").read_text())
    assert meta["format"] == "series" and meta["info"]["modality"] == "series"
    extra = meta["info"]["extra"]
    assert extra["freq"] == "MS" and extra["season"] == 12 and extra["num_series"] == 2
    assert extra["past_covariates"] == ["temp"] and extra["future_covariates"] == ["promo"]
    # per series: train origins 12..(48-8-6-6)=28, val 34..36, test 40..42
    assert meta["info"]["counts"] == {"train": 2 * 17, "val": 2 * 1, "test": 2 * 3}
    history = json.loads((runs / "train/plots/history.json").read_text())
    assert len(history) == 4 and {"train_loss", "val_loss", "val_mae"} <= set(history[0])
    metrics = json.loads((runs / "evaluate/metrics.json").read_text())
    assert metrics["season"] == 12 and metrics["interval"]["nominal"] == 0.8
    for part in ("test", "backtest"):
        for who in ("model", "naive", "seasonal_naive", "drift"):
            assert set(metrics[part][who]) >= {"mae", "rmse", "smape", "mase"}, (part, who)
        assert 0 <= metrics[part]["model"]["coverage"] <= 1
        assert metrics[part]["mase_vs_seasonal_naive"] == pytest.approx(
            metrics[part]["model"]["mase"] / metrics[part]["seasonal_naive"]["mase"], rel=1e-4
        )
    assert metrics["test"]["windows"] == 2 * 2  # 8 test steps in tiles of 6, per shop
    assert metrics["backtest"]["windows"] == 2 * 4
    plots = {p.name for p in (runs / "evaluate/plots").iterdir()}
    assert plots == {"forecast.json", "horizon.json", "forecast_best.png", "forecast_worst.png"}
    steps = json.loads((runs / "evaluate/plots/horizon.json").read_text())
    assert [s["horizon_step"] for s in steps] == list(range(1, HORIZON + 1))
    forecast = json.loads((runs / "evaluate/plots/forecast.json").read_text())
    assert len(forecast) == TEST and all(r["lower"] <= r["upper"] for r in forecast)


def test_export_matches_the_eager_model_and_the_card_describes_it(shop: Path) -> None:
    export = shop / "runs/shop/export/out"
    card = json.loads((export / "model_card.json").read_text())
    assert card["task"] == "forecast" and card["inputs"] == [
        "past",
        "series",
        "past_covariates",
        "future_covariates",
    ]
    f = card["forecast"]
    assert (f["lookback"], f["horizon"], f["frequency"]) == (LOOKBACK, HORIZON, "MS")
    assert f["covariates"] == {"past": ["temp"], "future": ["promo"], "static": ["size"]}
    assert f["quantiles"] == [0.1, 0.5, 0.9]
    diffs = {x["format"]: x["max_abs_diff"] for x in card["files"] if "max_abs_diff" in x}
    assert set(diffs) == {"torchscript", "onnx", "safetensors"}
    assert diffs["torchscript"] <= 1e-4 and diffs["onnx"] <= 1e-3 and diffs["safetensors"] == 0
    text = (export / "model_card.md").read_text()
    for needle in ("lookback: 12", "horizon: 6", "frequency: MS", "'future': ['promo']"):
        assert needle in text


def test_poisoned_test_span_leaves_training_unchanged(shop: Path) -> None:
    clean = shop / "runs/shop"
    poisoned = shop / "runs/poisoned"
    for stage, name in (("train", "weights.safetensors"), ("build_model", "weights.safetensors")):
        assert (clean / stage / "out" / name).read_bytes() == (
            poisoned / stage / "out" / name
        ).read_bytes(), stage
    a = json.loads((clean / "load_data/out/scaler.json").read_text())
    b = json.loads((poisoned / "load_data/out/scaler.json").read_text())
    assert a == b
    assert json.loads((clean / "train/metrics.json").read_text()) == json.loads(
        (poisoned / "train/metrics.json").read_text()
    )


def _history_with_future_promos(root: Path) -> Path:
    """Each shop's first 40 months (the test span starts after them) plus the promotions
    of the next 6 months with the sales left empty."""
    table = rows()
    out = [table[0]]
    for line in table[1:]:
        i = int(line[0][:4]) * 12 + int(line[0][5:]) - 1 - 2000 * 12
        if i < MONTHS - TEST:
            out.append(line)
        elif i < MONTHS - TEST + HORIZON:
            out.append([line[0], line[1], "", "", line[4], line[5]])
    path = root / "history.csv"
    write_csv(path, out)
    return path


def test_kiln_predict_forecasts_from_a_csv(shop: Path) -> None:
    _history_with_future_promos(shop)
    onnx = ok(kiln("predict", "shop.yaml", "--file", "history.csv", cwd=shop)).stdout
    lines = onnx.splitlines()
    assert lines[0].split("\t") == [
        "series",
        "time",
        "sales_p10",
        "sales_p50",
        "sales_p90",
    ]
    body = [line.split("\t") for line in lines[1:]]
    assert len(body) == 2 * HORIZON
    assert [r[1] for r in body[:HORIZON]] == [f"{month(40 + h)}-01" for h in range(HORIZON)]
    assert {r[0] for r in body} == {"north", "south"}
    for r in body:
        low, mid, high = map(float, r[2:])
        assert low <= mid <= high
    # TorchScript gives the same numbers, and they are what evaluate scored at that origin
    script = ok(
        kiln(
            "predict",
            "shop.yaml",
            "--file",
            "history.csv",
            "--json",
            "--format",
            "torchscript",
            cwd=shop,
        )
    ).stdout.splitlines()
    records = [json.loads(x) for x in script]
    for r, j in zip(body, records, strict=True):
        assert j["series"] == r[0] and j["time"] == r[1]
        assert j["sales"]["p50"] == pytest.approx(float(r[3]), rel=1e-4)
    scored = {}
    with (shop / "runs/shop/evaluate/out/forecasts.csv").open() as fh:
        for row in csv.DictReader(fh):
            if row["part"] == "test" and row["origin"].startswith(month(40)):
                scored[(row["series"], row["time"][:10])] = float(row["q0.5"])
    for r in body:
        assert float(r[3]) == pytest.approx(scored[(r[0], r[1])], rel=1e-4)


def test_predict_needs_the_future_covariates_and_known_series(shop: Path) -> None:
    table = [line for line in rows() if line[0] == "month" or line[0] < month(40)]
    write_csv(shop / "no_future.csv", table)
    result = kiln("predict", "shop.yaml", "--file", "no_future.csv", cwd=shop)
    assert result.returncode == 2, result.stderr
    assert "needs their values for the next 6 steps" in result.stderr
    assert "Traceback" not in result.stderr
    renamed = [[*line[:1], "west" if line[1] == "south" else line[1], *line[2:]] for line in table]
    write_csv(shop / "unknown.csv", renamed)
    result = kiln("predict", "shop.yaml", "--file", "unknown.csv", cwd=shop)
    assert result.returncode == 2 and "series 'west' was not in the training data" in result.stderr
    result = kiln("predict", "shop.yaml", "some text", cwd=shop)
    assert result.returncode == 2 and "--file series.csv" in result.stderr


def _single(rows_: list[str]) -> str:
    return "month,y\n" + "\n".join(rows_) + "\n"


GOOD = [f"{month(i)},{i + 1}" for i in range(30)]
BAD_TABLES = {
    "missing column": (
        "month,value\n" + "\n".join(f"{month(i)},{i}" for i in range(30)) + "\n",
        "data.csv:1: no column 'y' in the header",
    ),
    "unparsable timestamp": (
        _single([*GOOD[:6], "2000-13,7", *GOOD[7:]]),
        "data.csv:8: column 'month': cannot read '2000-13' as a timestamp",
    ),
    "duplicate timestamp": (
        _single([*GOOD[:10], GOOD[9], *GOOD[10:]]),
        "data.csv:12: duplicate timestamp 2000-10-01 00:00:00 (also at line 11)",
    ),
    "unsorted rows": (
        _single([*GOOD[:4], GOOD[5], GOOD[4], *GOOD[6:]]),
        "data.csv:7: timestamp 2000-05-01 00:00:00 comes before the one above it",
    ),
    "non-numeric value": (
        _single([*GOOD[:3], f"{month(3)},lots", *GOOD[4:]]),
        "data.csv:5: column 'y': 'lots' is not a number",
    ),
    "gaps refused": (
        _single([*GOOD[:8], *GOOD[10:15], f"{month(15)},", *GOOD[16:]]),
        "2 missing timestamp(s) and 1 empty value(s), first: missing timestamp 2000-09-01",
    ),
}
LOAD = """\
task: forecast
stages:
  load_data:
    dataset:
      {name: csv_series, path: data.csv, time_column: month, targets: [y], time_format: "%Y-%m"}
    windows: {lookback: 4, horizon: 2}
    split: {test: 4}
"""


@pytest.mark.parametrize("case", sorted(BAD_TABLES))
def test_bad_tables_fail_with_a_positioned_error(case: str, tmp_path: Path) -> None:
    text, message = BAD_TABLES[case]
    (tmp_path / "data.csv").write_text(text)
    (tmp_path / "p.yaml").write_text(LOAD)
    result = kiln("run", "p.yaml", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert message in result.stderr, result.stderr


def test_gaps_are_filled_when_asked_and_counted(tmp_path: Path) -> None:
    text, _ = BAD_TABLES["gaps refused"]
    (tmp_path / "data.csv").write_text(text)
    (tmp_path / "p.yaml").write_text(LOAD.replace('"%Y-%m"}', '"%Y-%m", fill: interpolate}'))
    result = ok(kiln("run", "p.yaml", cwd=tmp_path))
    assert "filled 3 target" in result.stderr + result.stdout
    meta = json.loads((tmp_path / "runs/p/load_data/out/meta.json").read_text())
    fill = meta["info"]["extra"]["fill"]
    assert fill == {
        "policy": "interpolate",
        "missing_timestamps": 2,
        "filled_targets": 3,
        "filled_covariates": 0,
    }


def test_spec_mistakes_are_caught_before_anything_runs(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        LOAD.replace("split: {test: 4}", "split: {test: 4, val: 1}")
        + "  build_model:\n    model: {name: small_cnn}\n"
    )
    result = kiln("validate", "p.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert "split.val (1) must be 0 or at least windows.horizon (2)" in result.stderr
    (tmp_path / "q.yaml").write_text(LOAD + "  build_model:\n    model: {name: small_cnn}\n")
    result = kiln("validate", "q.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert "model 'small_cnn' takes image inputs, but the dataset is series" in result.stderr
    assert "Traceback" not in result.stderr
