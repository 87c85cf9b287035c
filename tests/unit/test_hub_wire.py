"""Live messages over NOTIFY: anything over the payload limit travels in parts and arrives whole."""

from __future__ import annotations

import json
import uuid

from chatapp.conversations.buffer import TranscriptBuffer
from chatapp.conversations.hub import MAX_PAYLOAD_BYTES, Hub, encode, make_channels


def test_small_messages_travel_whole() -> None:
    message = {"k": "final", "c": str(uuid.uuid4()), "t": "short"}
    assert [json.loads(p) for p in encode(message)] == [message]


async def test_a_long_utterance_is_split_and_reassembled() -> None:
    conversation_id = uuid.uuid4()
    text = "Ünïcødé 🚆 " * 2000  # multi-byte characters, ~30 KB of UTF-8
    message = {"k": "final", "c": str(conversation_id), "s": 1, "i": "x", "r": "agent", "t": text, "x": False}
    parts = encode(message)
    assert len(parts) > 1
    assert all(len(p.encode()) <= MAX_PAYLOAD_BYTES for p in parts)
    hub = Hub(make_channels("memory", "postgresql:///unused"), TranscriptBuffer())
    async with hub.listen(conversation_id, uuid.uuid4()) as listener:
        for part in parts:
            hub.receive(part)
        received = listener.queue.get_nowait()
    assert received["t"] == text
    assert listener.queue.empty()
