"""Merging a client's copy of a transcript with the server's: by order and text, never by the client's clock."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from chatapp.conversations.client_copy import merge_client_copy
from chatapp.conversations.events import Role, TranscriptEvent
from chatapp.conversations.queries import StoredUtterance

C = uuid.uuid4()
T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
NOW = T0 + timedelta(minutes=10)


def stored(*lines: tuple[Role, str]) -> list[StoredUtterance]:
    return [
        StoredUtterance(C, n + 1, f"srv-{n}", role, text, False, T0 + timedelta(minutes=n))
        for n, (role, text) in enumerate(lines)
    ]


def copy(*lines: tuple[Role, str]) -> list[TranscriptEvent]:
    far_off = T0 + timedelta(days=3)  # the browser's clock: whatever it says, it decides nothing
    return [
        TranscriptEvent(C, f"client-{n}", role, text, final=True, timestamp=far_off)
        for n, (role, text) in enumerate(lines)
    ]


def shape(merged: list[StoredUtterance | TranscriptEvent]) -> list[tuple[str, str, bool]]:
    return [(m.role, m.text, isinstance(m, StoredUtterance)) for m in merged]


def test_a_repeated_yes_maps_one_to_one_and_the_extra_one_is_added_at_its_place() -> None:
    server = stored(("user", "yes"), ("agent", "Sure."), ("user", "yes"))
    client = copy(("user", "yes"), ("agent", "Sure."), ("user", "yes"), ("agent", "Ok."), ("user", "yes"))
    merged = merge_client_copy(client, server, T0, NOW)
    assert shape(merged) == [
        ("user", "yes", True),
        ("agent", "Sure.", True),
        ("user", "yes", True),
        ("agent", "Ok.", False),
        ("user", "yes", False),
    ]
    times = [m.created_at if isinstance(m, StoredUtterance) else m.timestamp for m in merged]
    assert times == sorted(times)
    assert times[-1] < NOW


def test_lines_only_the_client_has_go_between_their_neighbours_timed_between_them() -> None:
    server = stored(("user", "Lisbon?"), ("agent", "When?"), ("user", "In May"))
    client = copy(("agent", "Hello!"), ("user", "Lisbon?"), ("agent", "When?"), ("user", "Soon"), ("user", "In  may"))
    merged = merge_client_copy(client, server, T0 - timedelta(minutes=1), NOW)
    assert shape(merged) == [
        ("agent", "Hello!", False),  # before the first: between the conversation's start and it
        ("user", "Lisbon?", True),
        ("agent", "When?", True),
        ("user", "Soon", False),
        ("user", "In May", True),  # spacing and case aside, the same words
    ]
    hello, soon = merged[0], merged[3]
    assert isinstance(hello, TranscriptEvent)
    assert isinstance(soon, TranscriptEvent)
    assert T0 - timedelta(minutes=1) < hello.timestamp < T0
    assert server[1].created_at < soon.timestamp < server[2].created_at


def test_a_copy_the_server_has_entirely_adds_nothing_and_ids_match_first() -> None:
    server = stored(("user", "yes"), ("user", "yes"))
    client = copy(("user", "yes"), ("user", "yes"))
    assert shape(merge_client_copy(client, server, T0, NOW)) == [("user", "yes", True)] * 2
    named = [
        TranscriptEvent(C, "srv-1", "user", "yes", final=True),
        TranscriptEvent(C, "new", "user", "yes", final=True),
    ]
    assert shape(merge_client_copy(named, server, T0, NOW)) == [("user", "yes", True)] * 2  # srv-1 by id, then srv-0


def test_in_a_reopened_conversation_what_only_the_client_had_goes_into_the_current_period() -> None:
    # Saved with two lines, reopened after them (the current period starts at index 2): a client copy that lacks
    # the old agent line and adds one of its own in that place must not write into the saved period.
    server = stored(("user", "Kyoto?"), ("agent", "Temples."), ("user", "And Nara?"))
    client = copy(("user", "Kyoto?"), ("user", "Said before it was saved?"), ("user", "And Nara?"))
    merged = merge_client_copy(client, server, T0, NOW, period_start=2)
    assert shape(merged) == [
        ("user", "Kyoto?", True),
        ("agent", "Temples.", True),
        ("user", "Said before it was saved?", False),
        ("user", "And Nara?", True),
    ]
    without_periods = merge_client_copy(client, server, T0, NOW)
    assert shape(without_periods)[1] == ("user", "Said before it was saved?", False)  # would have gone in period 0
