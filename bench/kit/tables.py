"""Reports: a row per measurement beside its baseline, and the Markdown table they print as."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class Row:
    """One line of a benchmark table: the app's number beside the same-run baseline and the target."""

    measurement: str
    chatapp: str
    baseline: str = "—"
    ratio: str = "—"
    target: str = "—"
    met: str = "—"
    # The same measurement against a floor (bench.history.floor_app), where a benchmark has one.
    floor: str = ""
    floor_ratio: str = ""


@dataclass
class Report:
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


COLUMNS = ("measurement", "chatapp", "baseline", "ratio", "target", "met?")


def verdict(ok: bool) -> str:
    return "yes" if ok else "**NO**"


def ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.2f} ms"


def per_second(rate: float) -> str:
    return f"{rate:,.0f}/s"


def times(ratio: float) -> str:
    return "n/a" if math.isnan(ratio) or math.isinf(ratio) else f"{ratio:.2f}x"


FLOOR_COLUMNS = ("floor", "÷ floor")


def format_report(report: Report) -> str:
    """The table; the floor's two columns (after the ratio to the baseline) only when a row has a floor."""
    with_floor = any(r.floor for r in report.rows)
    columns = (*COLUMNS[:4], *FLOOR_COLUMNS, *COLUMNS[4:]) if with_floor else COLUMNS
    cells = [list(columns)] + [
        [r.measurement, r.chatapp, r.baseline, r.ratio]
        + ([r.floor or "—", r.floor_ratio or "—"] if with_floor else [])
        + [r.target, r.met]
        for r in report.rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = [f"## {report.title}", ""]
    for index, row in enumerate(cells):
        lines.append("| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) + " |")
        if index == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    if report.notes:
        lines.append("")
        lines.extend(f"- {note}" for note in report.notes)
    return "\n".join(lines)
