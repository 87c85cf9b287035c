"""A history row renders the person's text escaped everywhere it appears (the row template escapes by hand:
autoescape is off inside it), and its buttons name the list's one form."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from markupsafe import Markup

from chatapp.app import template_engine
from chatapp.core.settings import Settings
from chatapp.history.grouping import short_datetime
from chatapp.history.views import HistoryRow

HOSTILE = "<script>alert('x')</script> \"quoted\" & <b>"


def render_row(row: HistoryRow) -> str:
    engine = template_engine(Settings()).engine
    template = engine.from_string('{% from "_history_row.html" import history_row %}{{ history_row(row) }}')
    return str(template.render(row=row))


def test_a_hostile_title_and_snippet_are_escaped_in_every_place() -> None:
    started = datetime(2026, 11, 29, 10, 30, tzinfo=UTC)
    row = HistoryRow(uuid.uuid4(), HOSTILE, started, "<1 min>", 3, "Today", Markup("<mark>ok</mark> ") + HOSTILE)
    html = render_row(row)
    assert "<script>" not in html
    assert "<b>" not in html
    assert '"quoted"' not in html
    escaped = "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &#34;quoted&#34; &amp; &lt;b&gt;"
    assert html.count(escaped) == 6  # the title, 3 button labels, the delete confirmation, the snippet
    assert "&lt;1 min&gt;" in html
    assert "<mark>ok</mark>" in html  # the search's highlight is markup already
    assert html.count('form="row-actions"') == 3
    assert "<form" not in html


def test_the_short_start_time_says_what_strftime_said() -> None:
    for moment in (datetime(2026, 1, 5, 7, 3, tzinfo=UTC), datetime(2026, 12, 28, 23, 59, tzinfo=UTC)):
        assert short_datetime(moment) == moment.strftime("%b %-d, %Y %H:%M")
