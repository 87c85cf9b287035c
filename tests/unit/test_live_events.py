"""The live-event union: every kind survives the wire, the wire stays short, and a malformed payload is
dropped with a warning (never its text) without stopping live delivery."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from datetime import UTC, datetime

import msgspec
import pytest

from chatapp.conversations.buffer import TranscriptBuffer
from chatapp.conversations.hub import CHANNEL, Hub, encode, make_channels
from chatapp.conversations.live_events import (
    AgentInterrupt,
    AgentText,
    DecodeError,
    Ended,
    Final,
    History,
    Interim,
    ListenerChange,
    Logout,
    Part,
    Ping,
    Recent,
    State,
    Titled,
    Wake,
    Wire,
    decode,
)
from chatapp.conversations.live_events import encode as encode_event

C, U = uuid.uuid4(), uuid.uuid4()
NOW = datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
SECRET = "a secret itinerary"

EVERY_KIND: list[Wire] = [
    Final(conversation_id=C, seq=3, item_id="a1", role="agent", text="Hi ✈", interrupted=False, created_at=NOW),
    Final(
        conversation_id=C, seq=2, item_id="u1", role="user", text="Rome", interrupted=True, created_at=NOW, late=True
    ),
    Interim(conversation_id=C, item_id="a2", role="agent", text="Hel", timestamp=NOW, origin="p1"),
    State(conversation_id=C, state="thinking"),
    State(conversation_id=C, state="unavailable", detail="No model configured."),
    Ended(conversation_id=C, user_id=U, reason="new_chat"),
    History(user_id=U, recent=[Recent(C, "Rome in May", pinned=True), Recent(uuid.uuid4(), None)]),
    Logout(user_id=U, session="0123abcd"),
    Titled(conversation_id=C, user_id=U, text="Spring in Lisbon"),
    AgentText(conversation_id=C, to="holder", text="And Florence?"),
    AgentInterrupt(conversation_id=C, to="holder"),
    ListenerChange(up=False, origin="p1"),
    Wake(),
    Ping(),
    Part(id="p", n=0, of=2, data='{"k":'),
]


@pytest.mark.parametrize("event", EVERY_KIND, ids=lambda e: type(e).__name__)
def test_every_kind_round_trips(event: Wire) -> None:
    assert decode(encode_event(event)) == event
    assert decode(encode_event(event).decode()) == event  # NOTIFY hands the listener text


def test_the_wire_names_stay_short() -> None:
    final = json.loads(encode_event(EVERY_KIND[0]))
    assert final == {"k": "final", "c": str(C), "s": 3, "i": "a1", "r": "agent", "t": "Hi ✈", "x": False,
                     "ts": "2026-05-06T07:08:09.123456Z"}  # fmt: skip
    assert json.loads(encode_event(EVERY_KIND[1]))["lt"] is True
    assert json.loads(encode_event(State(conversation_id=C, state="idle", origin="p"))) == {
        "k": "state",
        "o": "p",
        "c": str(C),
        "st": "idle",
    }


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'{"t": "no kind"}',
        b'{"k": "nonsense", "c": "x"}',
        b'{"k": "state", "c": "not-a-uuid", "st": "idle"}',
        b'{"k": "state", "c": "' + str(C).encode() + b'", "st": "dancing"}',
        b'{"k": "final", "c": "' + str(C).encode() + b'", "s": "one", "i": "x", "r": "agent", "t": "t", "x": false,'
        b' "ts": "2026-01-01T00:00:00Z"}',
        b'{"k": "interim", "c": "' + str(C).encode() + b'", "i": "x", "r": "agent", "t": "t"}',
        b'{"k": "part", "id": "p", "n": 0, "of": 100000000, "d": "x"}',
        b'{"k": "part", "id": "p", "n": -1, "of": 2, "d": "x"}',
    ],
)
def test_a_malformed_payload_is_refused(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(raw)


def test_a_malformed_payload_is_dropped_with_a_warning_and_nothing_else_changes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = Hub(make_channels("memory", "postgresql:///unused"), TranscriptBuffer())
    bad_role = {"k": "interim", "c": str(C), "i": "x", "r": "robot", "t": SECRET, "ts": NOW.isoformat()}
    misfit_part = encode_event(Part(id="q", n=5, of=2, data=SECRET))
    with caplog.at_level(logging.WARNING, logger="chatapp.conversations.hub"):
        hub.receive(json.dumps(bad_role))
        hub.receive(misfit_part)
        hub.receive(encode_event(Part(id="r", n=0, of=1, data=encode_event(Part(id="s", n=0, of=1, data="")).decode())))
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["dropping a malformed live message"] * 3
    assert SECRET not in caplog.text
    assert hub._buffer.pending(C) == []
    assert hub._parts == {}


async def test_the_listener_keeps_delivering_after_a_malformed_payload() -> None:
    channels = make_channels("memory", "postgresql:///unused")
    hub = Hub(channels, TranscriptBuffer())
    state = State(conversation_id=C, state="listening")
    async with channels:
        task = asyncio.create_task(hub.run())
        try:
            async with hub.listen(C, U) as listener:
                while True:  # until the hub's subscription is up (the memory backend drops what comes before)
                    await hub.publish(State(conversation_id=C, state="idle"))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(listener.get(), 0.05)
                        break
                await channels.wait_published_many([b'{"k": "final", "c": 1}', b"\xff\xfe"], CHANNEL)
                await hub.publish(state)
                received = await asyncio.wait_for(listener.get(), 5)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert received == msgspec.structs.replace(state, origin=received.origin)
    assert received.origin
    assert hub.agent_states.get(C) == ("listening", "")


async def test_a_batch_keeps_its_order_and_a_large_event_arrives_whole() -> None:
    hub = Hub(make_channels("memory", "postgresql:///unused"), TranscriptBuffer())
    big = Final(conversation_id=C, seq=1, item_id="b", role="agent", text="wörd " * 3000, interrupted=False,
                created_at=NOW)  # fmt: skip
    small = Final(conversation_id=C, seq=2, item_id="s", role="agent", text="ok", interrupted=False, created_at=NOW)
    payloads = [p for event in (big, small) for p in encode(event)]
    assert len(payloads) > 2
    async with hub.listen(C, U) as listener:
        for payload in payloads:
            hub.receive(payload)
        assert [listener.get_nowait(), listener.get_nowait()] == [big, small]
