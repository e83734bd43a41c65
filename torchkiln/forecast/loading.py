"""load_series at run time: split series by time, fill, fit the scaling on the training
span, write the dataset artifact; and the split reader of that artifact (imports torch).

The artifact (`format: series`) holds:

- `series.safetensors`: every series one after another, in original units: `values`
  [rows, targets] (float64, filled), `observed` [rows, targets] (uint8: 0 where a value
  was filled, so metrics skip it), `past` [rows, P], `future` [rows, F], `static`
  [series, S], `offsets` [series + 1]; per split `<split>.origin` (the row of each window's
  first forecast step) and `<split>.series` (its series index);
- `series.json`: ids, first timestamps, frequency, lengths, where val and test start in
  each series, the columns and how the table was read (what `kiln predict` needs);
- `scaler.json`: the target scaling fitted on the training spans (per series or global)
  and the standardisation of the covariates.

Windows are cut when a split is read: `past` = the `lookback` steps before the origin,
the targets = the `horizon` steps from it. A training window's targets all lie before the
validation span, a validation window's before the test span.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchkiln.data.info import DatasetInfo
from torchkiln.errors import RunError
from torchkiln.forecast.table import (
    Table,
    TableError,
    describe_missing,
    display_name,
    fill_segments,
    read_table,
    season_of,
)
from torchkiln.io import read_json, write_json
from torchkiln.runtime.datasets import SPLITS, TensorSplit, write_dataset, write_tensors
from torchkiln.runtime.progress import log

FORMAT = "series"


# --- scaling (numpy) --------------------------------------------------------------------------


def fit_scaler(values: np.ndarray, method: str, log1p: bool) -> tuple[np.ndarray, np.ndarray]:
    """(loc, scale) per column of `values` [n, C] (already log1p'ed when `log1p`)."""
    if method == "none" or len(values) == 0:
        c = values.shape[1]
        return np.zeros(c), np.ones(c)
    if method == "standard":
        loc, scale = values.mean(axis=0), values.std(axis=0)
    elif method == "minmax":
        loc, scale = values.min(axis=0), values.max(axis=0) - values.min(axis=0)
    elif method == "robust":
        q1, med, q3 = np.percentile(values, [25, 50, 75], axis=0)
        loc, scale = med, q3 - q1
    else:  # pragma: no cover - the schema allows no other
        raise ValueError(method)
    scale = np.where(scale > 1e-12 * np.maximum(1.0, np.abs(loc)), scale, 1.0)
    return loc, scale


def transform(values: np.ndarray, loc: np.ndarray, scale: np.ndarray, log1p: bool) -> np.ndarray:
    x = np.log1p(values) if log1p else values
    return (x - loc) / scale


def inverse(values: np.ndarray, loc: np.ndarray, scale: np.ndarray, log1p: bool) -> np.ndarray:
    x = values * scale + loc
    return np.expm1(x) if log1p else x


# --- writing --------------------------------------------------------------------------------


@dataclass
class RawSeries:
    """Series read from a table, on their grids, not split or filled yet."""

    table: Table

    def write(self, out_dir: Path, *, dataset: Any, split: Any, seed: int, task: str) -> None:
        raise RunError(
            "series are split by time, in steps, with windows: load them with the load_series "
            "stage kind (the `load_data:` stage of a `task: forecast` spec)"
        )

    def write_series(
        self, out_dir: Path, *, windows: Any, split: Any, scaling: Any, task: str, source: Any
    ) -> DatasetInfo:
        return write_series(self.table, out_dir, windows, split, scaling, task, source)


def load_series_dataset(cfg: Any) -> RawSeries:
    return RawSeries(read_table(cfg.table()))


def run_load_series(ctx: Any) -> None:
    cfg = ctx.config
    raw = cfg.dataset.load(ctx.seed)
    if not isinstance(raw, RawSeries):
        raise RunError(
            f"dataset {cfg.dataset.name!r} did not return series (a RawSeries from "
            "torchkiln.forecast.loading); load_series needs a series dataset"
        )
    raw.write_series(
        ctx.out_dir,
        windows=cfg.windows,
        split=cfg.split,
        scaling=cfg.scaling,
        task=ctx.task.name,
        source=cfg.dataset.model_dump(mode="json"),
    )


def _origins(first: int, last: int, stride: int) -> list[int]:
    """Origins first..last (inclusive) every `stride` steps, aligned to end at `last` (the
    latest data is always used)."""
    if last < first:
        return []
    return list(range(last, first - 1, -stride))[::-1]


def write_series(
    table: Table,
    out_dir: Path,
    windows: Any,
    split: Any,
    scaling: Any,
    task: str,
    source: Any,
) -> DatasetInfo:
    spec = table.spec
    lookback, horizon = windows.lookback, windows.horizon
    missing = describe_missing(table)
    if missing is not None and spec.fill == "none":
        raise TableError(
            f"{table.where}: {missing}. Set the dataset's `fill:` to ffill, interpolate or zero "
            "(how many were filled is reported)"
        )
    values, observed, past, future, offsets = [], [], [], [], [0]
    spans: list[dict[str, int]] = []
    filled = {"targets": 0, "covariates": 0}
    origins: dict[str, list[tuple[int, int]]] = {s: [] for s in SPLITS}
    for index, s in enumerate(table.series):
        n = len(s.times)
        test_start = n - split.test
        val_start = test_start - split.val
        need = lookback + horizon + split.val + split.test
        if val_start - horizon < lookback:
            named = f"series {s.id!r}" if s.id else "the series"
            raise RunError(
                f"{table.where}: {named} has {n} steps, too few for lookback {lookback} + "
                f"horizon {horizon} (one training window) + val {split.val} + test "
                f"{split.test} = {need}; shorten the windows or the held-out spans"
            )
        cuts = [val_start, test_start]
        v, count = fill_segments(s.values, spec.fill, cuts)
        filled["targets"] += count
        p, count_p = fill_segments(s.past, spec.fill, cuts)
        f, count_f = fill_segments(s.future[:n], spec.fill, cuts)
        filled["covariates"] += count_p + count_f
        values.append(v)
        observed.append(~np.isnan(s.values))
        past.append(p)
        future.append(f)
        offsets.append(offsets[-1] + n)
        spans.append({"length": n, "val_start": val_start, "test_start": test_start})
        base = offsets[index]
        for o in _origins(lookback, val_start - horizon, windows.stride):
            origins["train"].append((base + o, index))
        for o in _origins(val_start, test_start - horizon, 1) if split.val else []:
            origins["val"].append((base + o, index))
        for o in _origins(test_start, n - horizon, 1):
            origins["test"].append((base + o, index))
    all_values = np.concatenate(values)
    if scaling.log and (all_values <= -1).any():
        row = int(np.argmax((all_values <= -1).any(axis=1)))
        raise RunError(
            f"scaling.log takes log(1 + x), but {table.where} has a value <= -1 "
            f"({all_values[row].min():g}, row {row + 1} of the series); turn `log` off"
        )
    scaler = _fit(values, past, future, table, spans, scaling)
    static = (
        np.stack([s.static for s in table.series])
        if spec.static
        else np.zeros((len(table.series), 0))
    )
    tensors = {
        "values": torch.from_numpy(all_values),
        "observed": torch.from_numpy(np.concatenate(observed).astype(np.uint8)),
        "past": torch.from_numpy(np.concatenate(past)),
        "future": torch.from_numpy(np.concatenate(future)),
        "static": torch.from_numpy(static.astype(np.float64)),
        "offsets": torch.tensor(offsets, dtype=torch.int64),
    }
    for name in SPLITS:
        pairs = origins[name]
        tensors[f"{name}.origin"] = torch.tensor([o for o, _ in pairs], dtype=torch.int64)
        tensors[f"{name}.series"] = torch.tensor([i for _, i in pairs], dtype=torch.int64)
    write_tensors(out_dir / "series.safetensors", tensors)
    season = season_of(table.freq)
    description = {
        "ids": [s.id for s in table.series],
        "starts": [s.times[0].isoformat() for s in table.series],
        "freq": table.freq,
        "season": season,
        "spans": spans,
        "table": spec.to_json(),
        "lookback": lookback,
        "horizon": horizon,
    }
    write_json(out_dir / "series.json", description)
    write_json(out_dir / "scaler.json", scaler)
    report = {
        "policy": spec.fill,
        "missing_timestamps": sum(s.gaps for s in table.series),
        "filled_targets": filled["targets"],
        "filled_covariates": filled["covariates"],
    }
    counts = {name: len(origins[name]) for name in SPLITS}
    info = DatasetInfo(
        modality="series",
        task=task,
        classes=(),
        input_shape=(lookback, len(spec.targets)),
        counts=counts,
        extra={
            "lookback": lookback,
            "horizon": horizon,
            "stride": windows.stride,
            "freq": table.freq,
            "season": season,
            "targets": list(spec.targets),
            "past_covariates": list(spec.past),
            "future_covariates": list(spec.future),
            "static_covariates": list(spec.static),
            "num_series": len(table.series),
            "val_steps": split.val,
            "test_steps": split.test,
            "fill": report,
            "scaling": {"method": scaling.method, "log": scaling.log, "per": scaling.per},
            "source": display_name(spec.source),
            "time_column": spec.time_column,
            "id_column": spec.id_column,
            "scaler": scaler,
        },
    )
    write_dataset(out_dir, fmt=FORMAT, info=info, source=source)
    shown = ", ".join(f"{counts[s]} {s}" for s in SPLITS)
    log(
        f"{len(table.series)} series, {len(all_values)} steps ({table.freq}, season {season}); "
        f"windows of {lookback} -> {horizon}: {shown}; "
        f"filled {report['filled_targets']} target and {report['filled_covariates']} covariate "
        f"value(s) ({report['missing_timestamps']} missing timestamps, fill: {spec.fill})"
    )
    return info


def _fit(
    values: list[np.ndarray],
    past: list[np.ndarray],
    future: list[np.ndarray],
    table: Table,
    spans: list[dict[str, int]],
    scaling: Any,
) -> dict[str, Any]:
    """Scalers fitted on the training spans only (what lies before each val_start)."""
    train = [v[: sp["val_start"]] for v, sp in zip(values, spans, strict=True)]
    log1p = scaling.log

    def prepared(x: np.ndarray) -> np.ndarray:
        return np.log1p(x) if log1p else x

    if scaling.per == "series":
        fitted = [fit_scaler(prepared(t), scaling.method, log1p) for t in train]
    else:
        pooled = fit_scaler(prepared(np.concatenate(train)), scaling.method, log1p)
        fitted = [pooled] * len(train)

    def standard(blocks: list[np.ndarray]) -> dict[str, list[float]]:
        rows = np.concatenate([b[: sp["val_start"]] for b, sp in zip(blocks, spans, strict=True)])
        loc, scale = fit_scaler(rows, "standard", False)
        return {"loc": loc.tolist(), "scale": scale.tolist()}

    statics = (
        np.stack([s.static for s in table.series])
        if table.spec.static
        else np.zeros((len(table.series), 0))
    )
    s_loc, s_scale = (
        fit_scaler(statics, "standard", False)
        if len(statics) > 1
        else (
            np.zeros(statics.shape[1]),
            np.ones(statics.shape[1]),
        )
    )
    return {
        "method": scaling.method,
        "log": log1p,
        "per": scaling.per,
        "targets": {
            "loc": [loc.tolist() for loc, _ in fitted],
            "scale": [scale.tolist() for _, scale in fitted],
        },
        "past": standard(past),
        "future": standard(future),
        "static": {"loc": s_loc.tolist(), "scale": s_scale.tolist(), "values": statics.tolist()},
    }


# --- reading --------------------------------------------------------------------------------


@dataclass
class SeriesStore:
    """The series of a dataset artifact, in original units (float64)."""

    folder: Path
    values: torch.Tensor
    observed: torch.Tensor
    past: torch.Tensor
    future: torch.Tensor
    static: torch.Tensor
    offsets: torch.Tensor
    origins: dict[str, tuple[torch.Tensor, torch.Tensor]]
    meta: dict[str, Any]
    scaler: dict[str, Any]
    #: series index -> its timestamps (pandas), filled in by whoever needs them
    times: dict[int, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, folder: Path) -> SeriesStore:
        from torchkiln.runtime.datasets import read_safetensors

        t = read_safetensors(folder / "series.safetensors")
        return cls(
            folder=folder,
            values=t["values"],
            observed=t["observed"].bool(),
            past=t["past"],
            future=t["future"],
            static=t["static"],
            offsets=t["offsets"],
            origins={s: (t[f"{s}.origin"], t[f"{s}.series"]) for s in SPLITS},
            meta=read_json(folder / "series.json"),
            scaler=read_json(folder / "scaler.json"),
        )

    @property
    def lookback(self) -> int:
        return int(self.meta["lookback"])

    @property
    def horizon(self) -> int:
        return int(self.meta["horizon"])

    @property
    def num_series(self) -> int:
        return len(self.offsets) - 1

    def series(self, i: int) -> slice:
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    def windows(
        self, origin: torch.Tensor, series: torch.Tensor
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor]:
        """Inputs `(past, series, past_covariates, future_covariates)` (float32, original
        units), targets [n, horizon, C] and which target steps exist and were observed
        [n, horizon, C]. A window running past its series' end repeats the last row there
        (those steps are marked missing)."""
        lookback, horizon = self.lookback, self.horizon
        end = self.offsets[series + 1] - 1  # last row of each window's series
        back = origin.unsqueeze(1) + torch.arange(-lookback, 0)
        ahead = origin.unsqueeze(1) + torch.arange(0, horizon)
        exists = ahead <= end.unsqueeze(1)
        ahead = torch.minimum(ahead, end.unsqueeze(1))
        span = torch.cat([back, ahead], dim=1)
        inputs = (
            self.values[back].float(),
            series.clone(),
            self.past[back].float(),
            self.future[span].float(),
        )
        valid = self.observed[ahead] & exists.unsqueeze(-1)
        return inputs, self.values[ahead].float(), valid


def read_series(artifact: Any, split: str) -> TensorSplit:
    """A split's windows, in memory (`TensorSplit`): batches are plain indexing."""
    store = SeriesStore.open(artifact.folder)
    origin, series = store.origins[split]
    inputs, targets, _ = store.windows(origin, series)
    return TensorSplit(inputs, targets)
