"""Live messages over NOTIFY: anything over the payload limit travels in parts and arrives whole."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from chatapp.conversations.buffer import TranscriptBuffer
from chatapp.conversations.hub import MAX_PAYLOAD_BYTES, Hub, encode, make_channels
from chatapp.conversations.live_events import Final, Interim, decode

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_small_messages_travel_whole() -> None:
    message = Interim(conversation_id=uuid.uuid4(), item_id="x", role="agent", text="short", timestamp=NOW)
    assert [decode(p) for p in encode(message)] == [message]


async def test_a_long_utterance_is_split_and_reassembled() -> None:
    conversation_id = uuid.uuid4()
    text = "Ünïcødé 🚆 " * 2000  # multi-byte characters, ~30 KB of UTF-8
    message = Final(
        conversation_id=conversation_id, seq=1, item_id="x", role="agent", text=text, interrupted=False, created_at=NOW
    )
    parts = encode(message)
    assert len(parts) > 1
    assert all(len(p) <= MAX_PAYLOAD_BYTES for p in parts)
    hub = Hub(make_channels("memory", "postgresql:///unused"), TranscriptBuffer())
    async with hub.listen(conversation_id, uuid.uuid4()) as listener:
        for part in parts:
            hub.receive(part)
        received = listener.get_nowait()
    assert isinstance(received, Final)
    assert received.text == text
    assert listener.empty()
