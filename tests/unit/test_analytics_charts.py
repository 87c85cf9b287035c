"""Chart geometry for the analytics page: readable axis tops, bars inside the plot, labels that do not crowd."""

from __future__ import annotations

from chatapp.history.charts import COLUMN_HEIGHT, MAX_X_LABELS, WIDTH, Datum, bar_chart, column_chart, nice_max


def data(values: list[int]) -> list[Datum]:
    return [Datum(str(n), f"item {n}", v) for n, v in enumerate(values)]


def test_axis_tops_are_round_and_halve_to_whole_numbers() -> None:
    tops = {v: nice_max(v) for v in (0, 1, 2, 3, 5, 9, 10, 11, 45, 99, 101, 9_999)}
    assert tops == {0: 2, 1: 2, 2: 2, 3: 4, 5: 6, 9: 10, 10: 10, 11: 20, 45: 60, 99: 100, 101: 200, 9_999: 10_000}
    assert all(top >= v and top % 2 == 0 for v, top in tops.items())


def test_columns_stay_inside_the_plot_and_the_newest_is_labelled() -> None:
    chart = column_chart("c", "t", "d", "conversations", data([0, 3, 7] * 10))
    assert [t.value for t in chart.ticks] == [0, 4, 8]
    assert all(c.x >= chart.left and c.x + c.width <= chart.right for c in chart.columns)
    assert all(c.y >= 0 and abs(c.y + c.height - chart.base) < 0.01 for c in chart.columns)
    assert max(c.height for c in chart.columns) <= COLUMN_HEIGHT
    labelled = [c for c in chart.columns if c.show_label]
    assert chart.columns[-1].show_label
    assert len(labelled) <= MAX_X_LABELS
    hours = column_chart("h", "t", "d", "conversations", data([1] * 24), label_newest=False)
    assert [c.datum.label for c in hours.columns if c.show_label] == ["0", "4", "8", "12", "16", "20"]


def test_empty_and_all_zero_charts_draw_nothing_tall() -> None:
    zeros = column_chart("z", "t", "d", "conversations", data([0] * 30))
    assert all(c.height == 0 for c in zeros.columns)
    assert bar_chart("b", "t", "d", "conversations", []).rows == []
    bars = bar_chart("b", "t", "d", "conversations", data([10, 5, 0]))
    assert [r.width for r in bars.rows] == [bars.track_width, bars.track_width / 2, 0]
    assert bars.bar_x + bars.track_width <= WIDTH
