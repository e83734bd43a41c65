"""`kiln predict SPEC --file series.csv` for a forecasting export: the next `horizon`
values after each series' last timestamp, with intervals for a quantile model.

Uses the export folder alone: `series.json` says how the table is read (columns, time
format, frequency, fill) and which series the model knows; `model.onnx` runs under
onnxruntime (numpy, no torch import) or `model.pt` under TorchScript. The scaling is
inside the exported file, so the table's values go in as they are.

A table problem is the user's input, reported like a usage error (exit 2): the same
positioned messages as load_series (missing column, unparsable or duplicate timestamp,
unsorted rows, non-numeric value, gaps the training fill policy does not allow).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from torchkiln.errors import RunError, UsageError
from torchkiln.forecast.table import Series, TableError, fill_segments, read_table
from torchkiln.forecast.tablespec import TableSpec
from torchkiln.io import read_json
from torchkiln.registry.registry import did_you_mean


def _runner(fmt: str, path: Path, names: list[str]) -> Any:
    if fmt == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda feeds: session.run(None, feeds)[0]
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated upstream; still works
        module = torch.jit.load(str(path), map_location="cpu").eval()

    def run(feeds: dict[str, Any]) -> Any:
        with torch.no_grad():
            return module(*(torch.from_numpy(feeds[n]) for n in names)).numpy()

    return run


def _window(
    s: Series, index: int, meta: dict[str, Any], lookback: int, horizon: int, where: str
) -> dict[str, np.ndarray]:
    """The exported model's inputs for the forecast after the series' last value."""
    spec = meta["table"]
    named = f"series {s.id!r}" if s.id else "the series"
    n = len(s.times)
    if n < lookback:
        raise TableError(
            f"{where}: {named} has {n} steps; the model needs the last {lookback} "
            f"(its lookback) before the forecast"
        )
    used = slice(n - lookback, n)
    values, _filled = fill_segments(s.values[used], spec["fill"], [])
    past_cov, _filled_p = fill_segments(s.past[used], spec["fill"], [])
    missing = np.isnan(values).any() or np.isnan(past_cov).any()
    if missing:
        row = int(np.argmax(np.isnan(np.concatenate([values, past_cov], axis=1)).any(axis=1)))
        line = s.lines[n - lookback + row]
        at = (
            f"{where}:{line}"
            if line
            else f"{where}: the missing timestamp {s.times[n - lookback + row]}"
        )
        raise TableError(
            f"{at}: {named} has an empty value or a missing timestamp in the last {lookback} "
            f"steps, and the model was trained with fill: {spec['fill']}; complete the table"
        )
    feeds = {
        "past": values.astype(np.float32)[None],
        "series": np.array([index], dtype=np.int64),
    }
    if spec["past"]:
        feeds["past_covariates"] = past_cov.astype(np.float32)[None]
    if spec["future"]:
        rows = s.future[n - lookback : n + horizon]
        if len(rows) < lookback + horizon:
            raise TableError(
                f"{where}: the model uses known-future covariates ({', '.join(spec['future'])}): "
                f"{named} needs their values for the next {horizon} steps. Add {horizon} rows "
                f"after its last value ({s.times[-1]}) with those columns filled and the "
                "target(s) left empty"
            )
        future, _ = fill_segments(rows, spec["fill"], [])
        if np.isnan(future).any():
            raise TableError(
                f"{where}: {named}: a known-future covariate is empty in the lookback or the "
                f"next {horizon} steps"
            )
        feeds["future_covariates"] = future.astype(np.float32)[None]
    return feeds


def _label(q: float) -> str:
    return f"p{q * 100:g}"


def predict_series(
    args: argparse.Namespace, folder: Path, card: dict[str, Any], fmt: str, path: Path
) -> int:
    import pandas as pd

    if args.inputs:
        raise UsageError(
            "this pipeline forecasts time series: give the history as --file series.csv "
            "(INPUT arguments are for image and text classifiers)"
        )
    if not args.file or args.file == "-":
        raise UsageError(
            "give the series to forecast from as a file: kiln predict SPEC --file series.csv "
            "(the columns the model was trained on, its last rows the latest values)"
        )
    file = Path(args.file)
    if not file.is_file():
        raise UsageError(f"--file {args.file}: no such file")
    meta = read_json(folder / "series.json")
    forecast = card.get("forecast") or {}
    lookback, horizon = int(meta["lookback"]), int(meta["horizon"])
    quantiles = forecast.get("quantiles")
    names = forecast.get("inputs") or card.get("inputs") or ["past", "series"]
    spec = TableSpec.from_json(meta["table"], ("file", file.as_posix()), meta["freq"])
    ids = list(meta["ids"])
    try:
        table = read_table(spec, future_rows=True)
        for s in table.series:
            if s.id not in ids:
                known = ", ".join(ids[:20]) + (" ..." if len(ids) > 20 else "")
                raise TableError(
                    f"{table.where}: series {s.id!r} was not in the training data (each series "
                    f"keeps its own scaling); {did_you_mean(s.id, ids)}known series: {known}"
                )
        feeds = [
            _window(s, ids.index(s.id), meta, lookback, horizon, table.where) for s in table.series
        ]
    except TableError as exc:
        raise UsageError(str(exc)) from None
    run = _runner(fmt, path, names)
    batch = {n: np.concatenate([f[n] for f in feeds]) for n in names}
    out = np.asarray(run(batch), dtype=np.float64)
    if out.shape[:2] != (len(feeds), horizon):
        raise RunError(f"the exported model returned shape {out.shape}")
    if quantiles is None:
        out = out[..., None]
    targets = list(meta["table"]["targets"])
    levels = quantiles or [None]
    has_id = bool(meta["table"]["id_column"])
    header = (["series"] if has_id else []) + ["time"]
    for t in targets:
        header += [t] if quantiles is None else [f"{t}_{_label(q)}" for q in levels]
    if not args.json:
        print("\t".join(header))
    for s, values in zip(table.series, out, strict=True):
        times = pd.date_range(s.times[-1], periods=horizon + 1, freq=meta["freq"])[1:]
        for h, when in enumerate(times):
            stamp = when.isoformat() if when != when.normalize() else when.date().isoformat()
            if args.json:
                record: dict[str, Any] = {"time": stamp}
                if has_id:
                    record["series"] = s.id
                for c, t in enumerate(targets):
                    if quantiles is None:
                        record[t] = round(float(values[h, c, 0]), 6)
                    else:
                        record[t] = {
                            _label(q): round(float(v), 6)
                            for q, v in zip(levels, values[h, c], strict=True)
                        }
                print(json.dumps(record, sort_keys=True))
            else:
                cells = ([s.id] if has_id else []) + [stamp]
                cells += [f"{v:.6g}" for v in values[h].reshape(-1)]
                print("\t".join(cells))
    return 0
