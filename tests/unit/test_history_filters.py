"""History filters are declared once (chatapp.history.filters): a registered filter's fields, parameters and SQL
condition reach the statements, the search form and the row buttons' hidden fields without touching them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from jinja2 import ChoiceLoader, DictLoader, Environment, FileSystemLoader, select_autoescape

from chatapp.core.paths import TEMPLATES_DIR
from chatapp.history import filters

ZONE = ZoneInfo("Europe/Lisbon")


def _min_messages(values: Any, zone: ZoneInfo) -> tuple[Any, ...]:
    raw = values.get("min", "")
    if raw and not raw.isdigit():
        raise filters.BadFilter("Min must be a number.")
    return (int(raw) if raw else None,)


MIN_MESSAGES = filters.HistoryFilter(
    fields=("min",),
    macro="min_messages",
    parse=_min_messages,
    condition="({0}::int IS NULL OR last_seq >= {0})",
)
MIN_FIELD = """{% macro min_messages(values, error) -%}
<input class="filter-input" type="number" name="min" value="{{ values['min'] }}" data-testid="min-field">
{%- endmacro %}"""


@pytest.fixture
def min_filter(monkeypatch: pytest.MonkeyPatch) -> None:
    """A filter registered the way a new one would be (and its field macro beside the others)."""
    monkeypatch.setattr(filters, "FILTERS", (*filters.FILTERS, MIN_MESSAGES))
    monkeypatch.setattr(filters, "FIELDS", (*filters.FIELDS, "min"))


def render(source: str, extra_templates: dict[str, str] | None = None, **context: Any) -> str:
    """`source` rendered with the app's templates (or `extra_templates` in their place)."""
    loader = ChoiceLoader(
        [DictLoader({"page.html": source, **(extra_templates or {})}), FileSystemLoader(TEMPLATES_DIR)]
    )
    env = Environment(loader=loader, autoescape=select_autoescape(default_for_string=True))
    return env.get_template("page.html").render(**context)


def test_the_date_range_is_parsed_and_checked() -> None:
    applied = filters.apply({"from": "2026-11-01", "to": "2026-11-30"}, ZONE)
    assert applied.error == ""
    assert applied.active
    assert applied.params == (datetime(2026, 11, 1, tzinfo=ZONE), datetime(2026, 12, 1, tzinfo=ZONE))
    assert filters.apply({"from": "2026-12-01", "to": "2026-11-30"}, ZONE).error == "From must be on or before To."
    bad = filters.apply({"from": "soon"}, ZONE)
    assert bad.error == "From must be a date (YYYY-MM-DD)."
    assert bad.params == filters.none()
    assert bad.values == {"from": "soon", "to": ""}
    assert not filters.apply({}, ZONE).active


def test_the_statements_take_the_filters_parameters_last() -> None:
    assert filters.sql(5) == (
        "($5::timestamptz IS NULL OR ended_at >= $5) AND ($6::timestamptz IS NULL OR ended_at < $6)"
    )


def test_a_registered_filter_reaches_parse_sql_form_and_hidden_fields(min_filter: None) -> None:
    applied = filters.apply({"from": "", "to": "", "min": "3"}, ZONE)
    assert applied.params == (None, None, 3)
    assert filters.sql(2).endswith("AND ($4::int IS NULL OR last_seq >= $4)")
    assert filters.apply({"min": "lots"}, ZONE).error == "Min must be a number."

    form = render(
        '{% import "_history_filters.html" as filter_fields %}'
        "{% for f in filters %}{{ filter_fields[f.macro](filter_values, '') }}{% endfor %}",
        {"_history_filters.html": (TEMPLATES_DIR / "_history_filters.html").read_text() + MIN_FIELD},
        filters=filters.FILTERS,
        filter_values=applied.values,
    )
    assert 'name="from"' in form
    assert 'name="to"' in form
    assert 'name="min" value="3" data-testid="min-field"' in form

    row = {"id": uuid.uuid4(), "title": "Lisbon", "pinned": False, "archived": False}
    row |= {"started_at": datetime(2026, 11, 29, tzinfo=UTC), "duration": "1 min", "message_count": 3, "snippet": ""}
    buttons = render(
        '{% from "_history_row.html" import history_row, row_actions_form %}'
        '{{ row_actions_form("", "", filter_values, "") }}{{ history_row(row) }}',
        row=row,
        filter_values=applied.values,
    )
    assert '<input type="hidden" name="min" value="3">' in buttons
    assert 'name="from"' not in buttons  # empty fields are not carried
    assert buttons.count('form="row-actions"') == 3  # pin, archive and delete post the list's one form
