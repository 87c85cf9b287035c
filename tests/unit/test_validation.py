"""The input rules in chatapp.core.validation, and the guards that rely on them, without a server."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from chatapp.conversations.events import MAX_ITEM_ID_LENGTH, TranscriptEvent
from chatapp.core.validation import InvalidInput, checked_text, checked_timestamp, has_control_characters
from chatapp.history.search import _START, _STOP, highlight


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x0b", "\x0c", "\x1b", "\x1f", "\x7f", "\x85", "\x9f", "\ud800"])
def test_control_characters_and_lone_surrogates_are_refused(char: str) -> None:
    assert has_control_characters(f"a{char}b")
    with pytest.raises(InvalidInput) as caught:
        checked_text(f"a{char}b", "messages[0].text")
    assert caught.value.status_code == 422
    assert caught.value.detail == "messages[0].text must not contain control characters."


def test_newlines_tabs_and_ordinary_unicode_are_text() -> None:
    text = "line\r\nnext\tcol — café ² 東京 🙂 \u2028"
    assert checked_text(text, "text") == text


def test_text_longer_than_the_limit_is_a_422_naming_the_field() -> None:
    assert checked_text("x" * 10, "text", 10) == "x" * 10
    with pytest.raises(InvalidInput) as caught:
        checked_text("x" * 10_001, "events[3].text", 10_000)
    assert caught.value.status_code == 422
    assert caught.value.detail == "events[3].text is longer than 10,000 characters."


def test_timestamps_come_back_in_utc_or_are_refused() -> None:
    assert checked_timestamp(datetime(2024, 1, 1, 12, tzinfo=timezone(timedelta(hours=2))), "t") == datetime(
        2024, 1, 1, 10, tzinfo=UTC
    )
    assert checked_timestamp(datetime(2024, 1, 1), "t").tzinfo is UTC  # naive means UTC
    for edge in (
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))),
        datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-14))),
    ):
        with pytest.raises(InvalidInput, match=r"events\[3\]\.timestamp is out of range"):
            checked_timestamp(edge, "events[3].timestamp")


def test_an_item_id_longer_than_the_column_cannot_become_an_event() -> None:
    TranscriptEvent(uuid.uuid4(), "x" * MAX_ITEM_ID_LENGTH, "user", "ok", final=True)
    with pytest.raises(ValueError, match="item_id longer than 128"):
        TranscriptEvent(uuid.uuid4(), "x" * (MAX_ITEM_ID_LENGTH + 1), "user", "ok", final=True)


def test_only_the_searchs_own_markers_become_highlights() -> None:
    assert highlight(f"a \x02fake\x03 <b> {_START}real{_STOP}") == "a \x02fake\x03 &lt;b&gt; <mark>real</mark>"
    assert _START.isalnum()
    assert _STOP.isalnum()
