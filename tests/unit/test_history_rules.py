"""Pure history rules: date headings (around midnight and month ends), durations, snippets, export names."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from chatapp.conversations.queries import Conversation
from chatapp.history.export import filename
from chatapp.history.grouping import duration_label, group_label, user_zone
from chatapp.history.search import _START, _STOP, highlight
from chatapp.history.service import Detail

NOW = datetime(2026, 3, 1, 0, 30, tzinfo=UTC)  # just after midnight, on the first of a month


@pytest.mark.parametrize(
    ("started_at", "label"),
    [
        (datetime(2026, 3, 1, 0, 0, tzinfo=UTC), "Today"),
        (datetime(2026, 2, 28, 23, 59, 59, tzinfo=UTC), "Yesterday"),  # one second before midnight
        (datetime(2026, 2, 28, 0, 0, tzinfo=UTC), "Yesterday"),
        (datetime(2026, 2, 27, 23, 59, tzinfo=UTC), "Previous 7 days"),
        (datetime(2026, 2, 22, 12, 0, tzinfo=UTC), "Previous 7 days"),
        (datetime(2026, 2, 21, 12, 0, tzinfo=UTC), "Previous 30 days"),
        (datetime(2026, 1, 30, 12, 0, tzinfo=UTC), "Previous 30 days"),
        (datetime(2026, 1, 29, 12, 0, tzinfo=UTC), "January 2026"),
        (datetime(2025, 12, 31, 23, 59, tzinfo=UTC), "December 2025"),
    ],
)
def test_group_labels_by_calendar_day(started_at: datetime, label: str) -> None:
    assert group_label(started_at, NOW) == label


def test_group_labels_follow_the_persons_time_zone() -> None:
    # 00:30 UTC on 1 March is still 28 February, 19:30, in New York.
    new_york = ZoneInfo("America/New_York")
    assert group_label(datetime(2026, 2, 28, 20, 0, tzinfo=UTC), NOW, new_york) == "Today"
    assert group_label(datetime(2026, 3, 1, 0, 10, tzinfo=UTC), NOW, new_york) == "Today"
    assert group_label(datetime(2026, 2, 28, 4, 0, tzinfo=UTC), NOW, new_york) == "Yesterday"


def test_unknown_time_zones_fall_back_to_utc() -> None:
    assert user_zone("Mars/Olympus") == ZoneInfo("UTC")
    assert user_zone("../../etc/passwd") == ZoneInfo("UTC")
    assert user_zone(None) == ZoneInfo("UTC")
    assert user_zone("Europe/Lisbon") == ZoneInfo("Europe/Lisbon")


@pytest.mark.parametrize(
    ("seconds", "label"),
    [(42, "42 s"), (60, "1 min"), (29 * 60 + 40, "30 min"), (3600, "1 h"), (3600 + 600, "1 h 10 min")],
)
def test_durations(seconds: int, label: str) -> None:
    assert duration_label(NOW, NOW + timedelta(seconds=seconds)) == label


def test_snippets_escape_everything_but_the_highlights() -> None:
    html = highlight(f"use {_START}<script>{_STOP} & <b>bold</b>")
    assert str(html) == "use <mark>&lt;script&gt;</mark> &amp; &lt;b&gt;bold&lt;/b&gt;"


def test_export_file_names_are_safe() -> None:
    conversation = Conversation(
        uuid.uuid4(), uuid.uuid4(), "r", "", NOW, NOW, "Plan: Lisbon / Porto? <3", NOW, 2, "new_chat", None
    )
    assert filename(Detail(conversation, []), "md") == "chatapp-2026-03-01-plan-lisbon-porto-3.md"
