"""The main list's cursor carries the pins page 1 showed on top; a crafted one is refused, never a 500."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime

import pytest

from chatapp.conversations.queries import MAX_PINS
from chatapp.history.service import BadCursor, _decode, decode_cursor, encode_cursor

NOW = datetime(2026, 12, 2, 15, 10, tzinfo=UTC)


def test_pins_round_trip_and_a_cursor_without_pins_keeps_the_old_format() -> None:
    last, pins = uuid.uuid4(), [uuid.uuid4() for _ in range(MAX_PINS)]
    assert _decode(encode_cursor(NOW, last, pins)) == (NOW, last, frozenset(pins))
    plain = encode_cursor(NOW, last)
    assert json.loads(base64.urlsafe_b64decode(plain + "=" * (-len(plain) % 4))) == [NOW.isoformat(), str(last)]
    assert decode_cursor(encode_cursor(NOW, last, pins)) == (NOW, last)
    assert len(encode_cursor(NOW, last, pins)) < 700  # fits comfortably in a URL


@pytest.mark.parametrize(
    "parts",
    [
        [NOW.isoformat(), str(uuid.uuid4()), "AAAA"],  # not a whole number of ids
        [NOW.isoformat(), str(uuid.uuid4()), base64.urlsafe_b64encode(b"x" * 16 * (MAX_PINS + 1)).decode()],
        [NOW.isoformat(), str(uuid.uuid4()), "", "extra"],
        [NOW.isoformat(), str(uuid.uuid4()), 7],
    ],
)
def test_crafted_pin_lists_are_bad_cursors(parts: list[object]) -> None:
    cursor = base64.urlsafe_b64encode(json.dumps(parts).encode()).decode()
    with pytest.raises(BadCursor):
        _decode(cursor)
