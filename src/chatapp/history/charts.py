"""Geometry for the analytics page's server-rendered SVG charts (templates/_charts.html draws them).

The numbers are worked out here rather than in Jinja so they can be tested and the template stays markup.
Every chart uses one viewBox width and scales to its container (width 100%), so text stays legible on a phone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

WIDTH = 400  # viewBox units; the page shows charts 350-460 px wide, so text renders at about its size
COLUMN_HEIGHT = 200
TOP, BOTTOM, LEFT, RIGHT = 12, 26, 48, 16  # plot margins of a column chart: y-axis labels left, x labels below
MAX_X_LABELS = 6
ROW_HEIGHT, ROW_GAP, LABEL_WIDTH, VALUE_WIDTH = 22, 6, 112, 52  # a bar chart's rows: label, bar, value


@dataclass(frozen=True)
class Datum:
    """One number with its short axis label and the long label used in tooltips and the table."""

    label: str
    long_label: str
    value: int


@dataclass(frozen=True)
class Column:
    x: float
    y: float
    width: float
    height: float
    datum: Datum
    label_x: float
    show_label: bool


@dataclass(frozen=True)
class Tick:
    y: float
    value: int


@dataclass(frozen=True)
class ColumnChart:
    """Vertical bars over a category axis (days, weeks, hours) with a 0 / half / max value axis."""

    id: str
    title: str
    desc: str
    unit: str
    columns: list[Column]
    ticks: list[Tick]
    width: int
    height: int
    left: int
    right: float
    base: float

    @property
    def total(self) -> int:
        return sum(c.datum.value for c in self.columns)


@dataclass(frozen=True)
class Row:
    y: float
    width: float
    datum: Datum


@dataclass(frozen=True)
class BarChart:
    """Horizontal bars, one labelled row each (duration buckets, topics)."""

    id: str
    title: str
    desc: str
    unit: str
    rows: list[Row]
    width: int
    height: int
    bar_x: int
    track_width: int
    row_height: int

    @property
    def total(self) -> int:
        return sum(r.datum.value for r in self.rows)


def nice_max(value: int) -> int:
    """The axis top: the value rounded up to 1, 2, 4, 6, 8 or 10 times a power of ten (at least 2), so the
    middle tick is a whole number and the ticks read well."""
    if value <= 2:
        return 2
    power = 10 ** math.floor(math.log10(value))
    top: int = next(step * power for step in (1, 2, 4, 6, 8, 10) if value <= step * power and step * power >= 2)
    return top


def column_chart(
    id: str, title: str, desc: str, unit: str, data: Sequence[Datum], label_newest: bool = True
) -> ColumnChart:
    """Columns for `data` in order; with `label_newest` the x labels count back from the last (today, this
    week), otherwise from the first (hour 00)."""
    top = nice_max(max((d.value for d in data), default=0))
    plot_height = COLUMN_HEIGHT - TOP - BOTTOM
    base = TOP + plot_height
    band = (WIDTH - LEFT - RIGHT) / max(1, len(data))
    every = max(1, math.ceil(len(data) / MAX_X_LABELS))
    columns = []
    for n, datum in enumerate(data):
        height = plot_height * datum.value / top
        x = LEFT + n * band
        columns.append(
            Column(
                x=round(x + band * 0.15, 2),
                y=round(base - height, 2),
                width=round(band * 0.7, 2),
                height=round(height, 2),
                datum=datum,
                label_x=round(x + band / 2, 2),
                show_label=((len(data) - 1 - n) if label_newest else n) % every == 0,
            )
        )
    ticks = [Tick(y=round(base - plot_height * v / top, 2), value=v) for v in (0, top // 2, top)]
    return ColumnChart(id, title, desc, unit, columns, ticks, WIDTH, COLUMN_HEIGHT, LEFT, WIDTH - RIGHT, base)


def bar_chart(id: str, title: str, desc: str, unit: str, data: Sequence[Datum]) -> BarChart:
    top = max((d.value for d in data), default=0) or 1
    room = WIDTH - LABEL_WIDTH - VALUE_WIDTH
    rows = [
        Row(y=n * (ROW_HEIGHT + ROW_GAP), width=round(room * d.value / top, 2), datum=d) for n, d in enumerate(data)
    ]
    height = max(1, len(rows) * (ROW_HEIGHT + ROW_GAP) - ROW_GAP)
    return BarChart(id, title, desc, unit, rows, WIDTH, height, LABEL_WIDTH, room, ROW_HEIGHT)
