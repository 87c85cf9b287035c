"""The hub's view of its LISTEN connection: losing it (or getting it back) ends every local stream."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from chatapp.conversations.buffer import TranscriptBuffer
from chatapp.conversations.hub import Hub, encode, make_channels
from chatapp.conversations.live_events import Final


async def test_a_lost_listener_marks_the_hub_down_and_ends_streams() -> None:
    hub = Hub(make_channels("memory", "postgresql:///unused"), TranscriptBuffer())
    conversation_id = uuid.uuid4()
    big = Final(
        conversation_id=conversation_id,
        seq=1,
        item_id="x",
        role="agent",
        text="wörd " * 3000,
        interrupted=False,
        created_at=datetime.now(UTC),
    )
    async with hub.listen(conversation_id, uuid.uuid4()) as listener:
        hub.receive(encode(big)[0])  # the first part of a message whose rest died with the connection
        hub.receive(json.dumps({"k": "listener", "up": False}))
        assert hub.live is False
        assert listener.overflowed
    async with hub.listen(conversation_id, uuid.uuid4()) as opened_during_outage:
        hub.receive(json.dumps({"k": "listener", "up": True}))
        assert hub.live is True
        # It may have missed NOTIFYs sent while nobody listened: it reconnects and replays from the database.
        assert opened_during_outage.overflowed
    assert hub._parts == {}
