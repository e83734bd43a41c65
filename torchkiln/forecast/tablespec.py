"""How to read one series table: plain data shared by the dataset configs (which make it)
and the run-time reader and `kiln predict` (which use it). No pydantic, no pandas."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TableSpec:
    """How to read one series table: plain data for the reader (no pydantic, no pandas)."""

    #: ("file", path) | ("package", distribution, path inside it) | ("torchkiln", file name)
    source: tuple[str, ...]
    time_column: str
    targets: list[str]
    id_column: str | None = None
    past: list[str] = field(default_factory=list)
    future: list[str] = field(default_factory=list)
    static: list[str] = field(default_factory=list)
    #: strftime format, "year" (integers), "quarter" ("1970 Q1"), or None (pandas infers)
    time_format: str | None = None
    #: pandas offset alias ("MS", "W-SAT", "QS"), or None to infer it
    freq: str | None = None
    fill: str = "none"
    format: str = "auto"
    separator: str = ","
    #: build the time column from (year column, quarter column) (statsmodels' macrodata)
    year_quarter: tuple[str, str] | None = None
    #: columns to ignore (an unnamed index column)
    drop: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "time_column": self.time_column,
            "targets": list(self.targets),
            "id_column": self.id_column,
            "past": list(self.past),
            "future": list(self.future),
            "static": list(self.static),
            "time_format": self.time_format,
            "fill": self.fill,
            "separator": self.separator,
            "year_quarter": list(self.year_quarter) if self.year_quarter else None,
            "drop": list(self.drop),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], source: tuple[str, ...], freq: str) -> TableSpec:
        """The spec a dataset was read with (series.json's `table`), for another file."""
        return cls(
            source=source,
            time_column=data["time_column"],
            targets=list(data["targets"]),
            id_column=data["id_column"],
            past=list(data["past"]),
            future=list(data["future"]),
            static=list(data["static"]),
            time_format=data["time_format"],
            freq=freq,
            fill=data["fill"],
            separator=data.get("separator", ","),
            year_quarter=tuple(data["year_quarter"]) if data.get("year_quarter") else None,
            drop=tuple(data.get("drop", ())),
        )
