"""Line charts as inline SVG text: learning curves without a JavaScript library.

`line_chart(series)` draws numeric series against a shared x axis (epochs) with axes,
round tick values, a legend and a `<title>` tooltip on every point. Everything written
into the SVG is escaped; the output is deterministic (same input, same bytes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

#: Colours that stay apart for the colour-blind (Okabe-Ito), cycled by series.
PALETTE = (
    "#0072b2",
    "#d55e00",
    "#009e73",
    "#cc79a7",
    "#e69f00",
    "#56b4e9",
    "#000000",
    "#f0e442",
)
#: Dash patterns, cycled when several series share a colour (one revision's train/val).
DASHES = ("", "6 3", "2 3", "8 3 2 3")

WIDTH, HEIGHT = 520, 280
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 30, 40


@dataclass(frozen=True)
class Series:
    """One line: `points` are (x, y) pairs; a None y breaks the line."""

    label: str
    points: Sequence[tuple[float, float | None]]
    colour: int = 0
    dash: int = 0


def _finite(y: float | None) -> bool:
    return y is not None and isinstance(y, (int, float)) and math.isfinite(y)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round values (1, 2, 2.5 or 5 times a power of ten) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0]
    if high <= low:
        pad = abs(low) * 0.05 or 0.5
        low, high = low - pad, high + pad
    raw = (high - low) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < high:
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


def _label(value: float) -> str:
    return "0" if value == 0 else f"{value:.4g}"


def _num(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _clean(points: Sequence[tuple[float, float | None]]) -> list[tuple[float, float | None]]:
    """Points with a finite x; a y that is missing or not finite becomes None (a gap)."""
    out: list[tuple[float, float | None]] = []
    for x, y in points:
        if not math.isfinite(x):
            continue
        out.append((x, float(y) if _finite(y) else None))
    return out


def line_chart(series: Sequence[Series], *, title: str, x_label: str = "epoch") -> str:
    """An `<svg>` element: the series on linear axes fitted to their finite values, the
    title written above the plot."""
    lines = [(s, _clean(s.points)) for s in series]
    xs = [x for _, points in lines for x, y in points if y is not None]
    ys = [y for _, points in lines for _, y in points if y is not None]
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} '
        f'{HEIGHT + 22 * _legend_rows(series)}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>"
        f'<text x="{LEFT}" y="{TOP - 6}" font-size="13" font-weight="600">{escape(title)}</text>'
    )
    if not ys:
        return head + (
            f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">no values</text></svg>'
        )
    x_ticks = nice_ticks(min(xs), max(xs), 6)
    if all(float(x).is_integer() for x in xs):  # epochs: whole numbers only
        x_ticks = sorted({round(t) for t in x_ticks if float(t).is_integer()}) or x_ticks
    y_ticks = nice_ticks(min(ys), max(ys), 5)
    x0, x1 = min(x_ticks[0], min(xs)), max(x_ticks[-1], max(xs))
    y0, y1 = min(y_ticks[0], min(ys)), max(y_ticks[-1], max(ys))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> str:
        return _num(LEFT + (0.5 if x1 == x0 else (x - x0) / (x1 - x0)) * plot_w)

    def py(y: float) -> str:
        return _num(TOP + (0.5 if y1 == y0 else (y1 - y) / (y1 - y0)) * plot_h)

    parts = [head, '<g class="grid" stroke="#ddd" stroke-width="1">']
    parts.extend(
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{py(t)}" y2="{py(t)}"/>' for t in y_ticks
    )
    parts.append(
        f'</g><g class="axes" stroke="#555" fill="none"><line x1="{LEFT}" y1="{TOP}" '
        f'x2="{LEFT}" y2="{TOP + plot_h}"/><line x1="{LEFT}" y1="{TOP + plot_h}" '
        f'x2="{WIDTH - RIGHT}" y2="{TOP + plot_h}"/></g>'
        '<g class="ticks" font-size="11" fill="#333">'
    )
    parts.extend(
        f'<text x="{LEFT - 6}" y="{py(t)}" dy="4" text-anchor="end">{escape(_label(t))}</text>'
        for t in y_ticks
    )
    parts.extend(
        f'<text x="{px(t)}" y="{TOP + plot_h + 16}" text-anchor="middle">{escape(_label(t))}</text>'
        for t in x_ticks
    )
    parts.append(
        f'<text x="{LEFT + plot_w / 2}" y="{TOP + plot_h + 32}" text-anchor="middle">'
        f"{escape(x_label)}</text></g>"
    )
    for s, points in lines:
        colour = PALETTE[s.colour % len(PALETTE)]
        dash = DASHES[s.dash % len(DASHES)]
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        path, pen_down = [], False
        for x, y in points:
            if y is None:
                pen_down = False
                continue
            path.append(f"{'L' if pen_down else 'M'}{px(x)} {py(y)}")
            pen_down = True
        parts.append(f'<g class="series" data-label="{escape(s.label)}">')
        if path:
            parts.append(
                f'<path d="{" ".join(path)}" fill="none" stroke="{colour}" stroke-width="2"'
                f"{dash_attr}/>"
            )
        parts.extend(
            f'<circle cx="{px(x)}" cy="{py(y)}" r="2.5" fill="{colour}"><title>'
            f"{escape(s.label)}: {escape(_label(x))} -&gt; {escape(f'{y:.6g}')}</title></circle>"
            for x, y in points
            if y is not None
        )
        parts.append("</g>")
    parts.append(_legend(series))
    parts.append("</svg>")
    return "".join(parts)


#: Legend entries per row (labels up to LEGEND_CHARS characters fit beside each other).
LEGEND_COLUMNS, LEGEND_CHARS, LEGEND_LEFT = 2, 34, 16


def _legend_rows(series: Sequence[Series]) -> int:
    return math.ceil(len(series) / LEGEND_COLUMNS) if series else 0


def _legend(series: Sequence[Series]) -> str:
    parts = ['<g class="legend" font-size="12" fill="#222">']
    column_w = (WIDTH - LEGEND_LEFT) / LEGEND_COLUMNS
    for i, s in enumerate(series):
        row, col = divmod(i, LEGEND_COLUMNS)
        x, y = LEGEND_LEFT + col * column_w, HEIGHT + 4 + row * 22
        colour = PALETTE[s.colour % len(PALETTE)]
        dash = DASHES[s.dash % len(DASHES)]
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(
            f'<line x1="{_num(x)}" x2="{_num(x + 24)}" y1="{y + 6}" y2="{y + 6}" '
            f'stroke="{colour}" stroke-width="2"{dash_attr}/>'
            f'<text x="{_num(x + 30)}" y="{y + 10}">'
            f"{escape(_shorten(s.label, LEGEND_CHARS))}</text>"
        )
    parts.append("</g>")
    return "".join(parts)


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "\u2026"
