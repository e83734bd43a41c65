"""Time-series datasets. Configs only; reading (pandas) lives in forecast/table.py and
splitting, scaling and writing in forecast/loading.py.

A series dataset yields one or more series on a regular time grid: a time column, one or
more target columns, an optional id column (many series in one file) and optional
covariates, each declared past-only (`past`: known up to the forecast origin),
known-future (`future`: known over the horizon too, e.g. a calendar or a planned
promotion) or static (`static`: one value per series).

Bundled series are read by file path from where they ship, so `kiln validate` never
imports the packages that ship them: a few classic series ship inside torchkiln itself
(`forecast/data/`), statsmodels' datasets are found through `importlib.metadata`, and
sktime's CSVs are used when sktime happens to be installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from torchkiln.forecast.tablespec import TableSpec
from torchkiln.registry import DatasetConfig, datasets
from torchkiln.registry.component import Config
from torchkiln.schemas.fields import LocalPath

Columns = list[Annotated[str, Field(min_length=1)]]
Fill = Literal["none", "ffill", "interpolate", "zero"]


class CovariatesConfig(Config):
    """Columns that help the forecast without being forecast themselves."""

    past: Columns = Field(default_factory=list)
    """Past-only covariates: observed up to the forecast origin, unknown over the horizon."""
    future: Columns = Field(default_factory=list)
    """Known-future covariates: known over the lookback and the horizon (calendar effects,
    planned prices). `kiln predict` needs their values for the next `horizon` steps: rows
    after the last target value, with the target left empty."""
    static: Columns = Field(default_factory=list)
    """Static covariates: one number per series (constant within each series)."""

    def names(self) -> list[str]:
        return [*self.past, *self.future, *self.static]


class SeriesDatasetConfig(DatasetConfig):
    """Base of series datasets: `load()` returns a `RawSeries` (forecast/loading.py) that
    the `load_series` stage kind splits by time, scales and writes."""

    modality: ClassVar[str] = "series"

    covariates: CovariatesConfig = Field(default_factory=CovariatesConfig)
    """Covariate columns by kind: past-only, known-future, static."""
    fill: Fill = "none"
    """Missing timestamps (gaps in the grid) and empty values: `none` refuses them (the
    error says how many and where); `ffill` repeats the last value, `interpolate` draws a
    straight line (within each split, so no value crosses into val or test), `zero` puts 0.
    How many were filled is always reported (log, dataset metadata)."""

    def table(self) -> TableSpec:
        """What to read and how (used at run time by forecast/table.py)."""
        raise NotImplementedError

    def load(self, seed: int) -> Any:
        from torchkiln.forecast.loading import load_series_dataset

        return load_series_dataset(self)


@datasets.register
class CsvSeries(SeriesDatasetConfig):
    """Your series as CSV (or Parquet): a time column, target column(s), an optional id
    column for many series in one file, optional covariates."""

    name: Literal["csv_series"] = "csv_series"
    path: LocalPath
    """The file (relative to the repository root): .csv, or .parquet when pandas can read
    Parquet here (it needs pyarrow or fastparquet)."""
    format: Literal["auto", "csv", "parquet"] = "auto"
    """File format; `auto` goes by the extension (.parquet/.pq is Parquet, anything else CSV)."""
    time_column: Annotated[str, Field(min_length=1)] = "time"
    """Column holding each row's timestamp."""
    targets: Annotated[Columns, Field(min_length=1)]
    """Columns to forecast (several: a multivariate forecast of all of them)."""
    id_column: Annotated[str, Field(min_length=1)] | None = None
    """Column naming the series a row belongs to (many series in one file); rows of one
    series must be in time order, series may be interleaved."""
    time_format: str | None = None
    """How timestamps are written: a strftime format (`%Y-%m-%d`, `%Y%m%d`), `year` for
    integer years, `quarter` for `1970 Q1`; default: pandas reads ISO dates and most others."""
    freq: str | None = None
    """The grid's frequency as a pandas offset alias (`MS` month start, `W-SAT`, `QS`, `D`,
    `h`); default: inferred from the timestamps (an error asks for it when it cannot be)."""
    separator: Annotated[str, Field(min_length=1, max_length=1)] = ","
    """Field separator of a CSV file."""

    @model_validator(mode="after")
    def _columns_once(self) -> CsvSeries:
        _check_columns(self.time_column, self.targets, self.id_column, self.covariates)
        return self

    def table(self) -> TableSpec:
        c = self.covariates
        return TableSpec(
            source=("file", self.path),
            time_column=self.time_column,
            targets=list(self.targets),
            id_column=self.id_column,
            past=list(c.past),
            future=list(c.future),
            static=list(c.static),
            time_format=self.time_format,
            freq=self.freq,
            fill=self.fill,
            format=self.format,
            separator=self.separator,
        )


def _check_columns(
    time_column: str, targets: list[str], id_column: str | None, covariates: CovariatesConfig
) -> None:
    named = [time_column, *targets, *([id_column] if id_column else []), *covariates.names()]
    twice = sorted({n for n in named if named.count(n) > 1})
    if twice:
        raise ValueError(
            f"column(s) {', '.join(map(repr, twice))} named twice (time, targets, id and "
            "covariates must be different columns)"
        )


@dataclass(frozen=True)
class Bundled:
    """A series that ships inside an installed package (read by path, never imported)."""

    source: tuple[str, ...]
    time_column: str
    columns: tuple[str, ...]
    targets: tuple[str, ...]
    freq: str
    about: str
    time_format: str | None = None
    year_quarter: tuple[str, str] | None = None
    drop: tuple[str, ...] = ()


#: name -> where it ships and how to read it
BUNDLED: dict[str, Bundled] = {
    "airline": Bundled(
        ("torchkiln", "airline.csv"),
        "month",
        ("passengers",),
        ("passengers",),
        "MS",
        "monthly international airline passengers (thousands), 1949-1960, 144 months "
        "(Box & Jenkins; sktime's Airline.csv)",
        time_format="%Y-%m",
    ),
    "lynx": Bundled(
        ("torchkiln", "lynx.csv"),
        "year",
        ("trappings",),
        ("trappings",),
        "YS",
        "annual Canadian lynx trappings, 1821-1934, 114 years (sktime's Lynx.csv)",
        time_format="year",
    ),
    "shampoo": Bundled(
        ("torchkiln", "shampoo.csv"),
        "month",
        ("sales",),
        ("sales",),
        "MS",
        "monthly shampoo sales over three years, 36 months (Makridakis; sktime's ShampooSales.csv)",
        time_format="%Y-%m",
    ),
    "co2": Bundled(
        ("package", "statsmodels", "statsmodels/datasets/co2/co2.csv"),
        "date",
        ("co2",),
        ("co2",),
        "W-SAT",
        "weekly atmospheric CO2 at Mauna Loa (ppm), 1958-2001, 2284 weeks with 59 missing "
        "values (statsmodels)",
        time_format="%Y%m%d",
    ),
    "sunspots": Bundled(
        ("package", "statsmodels", "statsmodels/datasets/sunspots/sunspots.csv"),
        "YEAR",
        ("SUNACTIVITY",),
        ("SUNACTIVITY",),
        "YS",
        "annual sunspot numbers, 1700-2008, 309 years (statsmodels)",
        time_format="year",
    ),
    "nile": Bundled(
        ("package", "statsmodels", "statsmodels/datasets/nile/nile.csv"),
        "year",
        ("volume",),
        ("volume",),
        "YS",
        "annual flow of the Nile at Aswan, 1871-1970, 100 years (statsmodels)",
        time_format="year",
    ),
    "macrodata": Bundled(
        ("package", "statsmodels", "statsmodels/datasets/macrodata/macrodata.csv"),
        "quarter_start",
        (
            "year",
            "quarter",
            "realgdp",
            "realcons",
            "realinv",
            "realgovt",
            "realdpi",
            "cpi",
            "m1",
            "tbilrate",
            "unemp",
            "pop",
            "infl",
            "realint",
        ),
        ("realgdp",),
        "QS",
        "US quarterly macroeconomic data, 1959Q1-2009Q3, 203 quarters, 12 variables "
        "(statsmodels); any of its columns can be a target or a covariate",
        year_quarter=("year", "quarter"),
    ),
    "uschange": Bundled(
        ("package", "sktime", "sktime/datasets/data/Uschange/Uschange.csv"),
        "Quarter",
        ("Consumption", "Income", "Production", "Savings", "Unemployment"),
        ("Consumption",),
        "QS",
        "quarterly percentage changes of US consumption, income, production, savings and "
        "unemployment, 1970Q1-2016Q3, 187 quarters (needs sktime installed: it ships there)",
        time_format="quarter",
        drop=("",),
    ),
}


@datasets.register
class BundledSeries(SeriesDatasetConfig):
    """A classic series that ships with torchkiln or an installed package (no download):
    airline, lynx, shampoo (inside torchkiln), co2, sunspots, nile, macrodata
    (statsmodels), uschange (sktime, when installed)."""

    name: Literal["bundled_series"] = "bundled_series"
    series: Literal[
        "airline", "lynx", "shampoo", "co2", "sunspots", "nile", "macrodata", "uschange"
    ]
    """Which series: airline (monthly passengers 1949-1960, 144), lynx (annual trappings
    1821-1934, 114), shampoo (monthly sales, 36): inside torchkiln; co2 (weekly Mauna Loa
    CO2 1958-2001, 2284, 59 missing: needs `fill:`), sunspots (annual 1700-2008, 309), nile
    (annual flow 1871-1970, 100), macrodata (US quarterly macro 1959-2009, 203 x 12
    columns): inside statsmodels; uschange (US quarterly changes 1970-2016, 187 x 5):
    inside sktime, when installed."""
    targets: Annotated[Columns, Field(min_length=1)] | None = None
    """Columns to forecast (default: the series' main column; macrodata: realgdp,
    uschange: Consumption)."""

    @model_validator(mode="after")
    def _known_columns(self) -> BundledSeries:
        entry = BUNDLED[self.series]
        for column in [*(self.targets or []), *self.covariates.names()]:
            if column not in entry.columns:
                raise ValueError(
                    f"series {self.series!r} has no column {column!r}; its columns: "
                    + ", ".join(c for c in entry.columns if c not in (entry.year_quarter or ()))
                )
        _check_columns(
            entry.time_column, self.targets or list(entry.targets), None, self.covariates
        )
        return self

    def table(self) -> TableSpec:
        entry = BUNDLED[self.series]
        c = self.covariates
        return TableSpec(
            source=entry.source,
            time_column=entry.time_column,
            targets=list(self.targets or entry.targets),
            past=list(c.past),
            future=list(c.future),
            static=list(c.static),
            time_format=entry.time_format,
            freq=entry.freq,
            fill=self.fill,
            year_quarter=entry.year_quarter,
            drop=entry.drop,
        )
