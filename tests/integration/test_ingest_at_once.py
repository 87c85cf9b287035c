"""The ingest API's one-statement path (pipeline.ingest, queries.store_open_finals): the same guarantees as `apply`
(idempotent by item id, gapless sequences under concurrency, nothing written where `apply` must decide), and with
postgres channels the finals' events sent by the statement that stores them, exactly as the hub would send them."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from chatapp.conversations import queries
from chatapp.conversations.events import TranscriptEvent
from chatapp.conversations.hub import PROCESS_ID, Listener, encode, seq_template
from chatapp.conversations.live_events import Final, Interim, LiveEvent, with_origin
from chatapp.conversations.pipeline import TranscriptPipeline, final_event
from chatapp.core.database import connection
from tests.factories import final, interim, make_conversation
from tests.support_statements import StatementLog, log_statements
from tests.support_stream import live_pipeline


async def rows(conversation_id: uuid.UUID) -> list[tuple[int, str, str, bool]]:
    async with connection() as conn:
        records = await conn.fetch(
            "SELECT seq, item_id, text, interrupted FROM utterance WHERE session = $1 ORDER BY seq", conversation_id
        )
    return [(r["seq"], r["item_id"], r["text"], r["interrupted"]) for r in records]


def waiting(listener: Listener) -> list[LiveEvent]:
    """Every event the listener holds now, oldest first."""
    events = []
    while not listener.empty():
        events.append(listener.get_nowait())
    return events


async def last_seq(conversation_id: uuid.UUID) -> int:
    conversation = await queries.get_conversation(conversation_id, include_deleted=True)
    assert conversation is not None
    return conversation.last_seq


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> StatementLog:
    """The store's pooled connection and the hub's own connections."""
    return log_statements(monkeypatch, queries, own_connections=True)


async def test_a_one_final_ingest_is_one_statement_that_also_sends_its_event(db: str, statements: StatementLog) -> None:
    c = await make_conversation()
    async with live_pipeline("postgres", db) as pipeline, pipeline.hub.listen(c.id, c.owner) as listener:
        await pipeline.ingest(c.id, [final(c.id, "warm-up", "first")], 0)  # connects, prepares
        await asyncio.wait_for(listener.get(), 10)
        statements.take()
        event = final(c.id, "one", 'Say "s":0, then "hi" — ünïcode', role="agent")
        written = await pipeline.ingest(c.id, [event], 0)
        received = await asyncio.wait_for(listener.get(), 10)
        sent = statements.take()
    assert written is not None
    assert [u.seq for u in written.stored] == [2]
    assert len(sent) == 1
    assert "pg_notify" in sent[0]
    assert "INSERT INTO utterance" in sent[0]
    # What the listener got is exactly what the hub publishes for the stored row.
    assert isinstance(received, Final)
    stored = (await queries.list_utterances(c.id))[-1]
    assert received == with_origin(final_event(stored), PROCESS_ID)
    assert (received.seq, received.text, received.role) == (2, event.text, "agent")
    assert await last_seq(c.id) == 2


def test_the_seq_template_is_the_payload_the_hub_would_send() -> None:
    c = uuid.uuid4()
    for text in ["plain", 'quotes "s":0, inside', "\\ backslash", "emoji 🙂 and ümlaut", "x" * 6000]:
        event = Final(
            conversation_id=c,
            seq=0,
            item_id="i-1",
            role="user",
            text=text,
            interrupted=False,
            created_at=final(c, "i", "t").timestamp,
        )
        template = seq_template(event)
        assert template is not None
        head, tail = template
        for seq in (1, 42, 2**31 - 1):
            numbered = Final(**{**{f: getattr(event, f) for f in event.__struct_fields__}, "seq": seq})
            assert (head + str(seq) + tail).encode() == encode(with_origin(numbered, PROCESS_ID))[0]
    big = Final(conversation_id=c, seq=0, item_id="i", role="user", text="x" * 7000, interrupted=False,
                created_at=final(c, "i", "t").timestamp)  # fmt: skip
    assert seq_template(big) is None  # too large for one NOTIFY: the hub sends it in parts


async def test_a_final_too_large_for_one_notify_is_sent_in_parts_after_the_commit(db: str) -> None:
    c = await make_conversation()
    text = "wörd " * 1999
    async with live_pipeline("postgres", db) as pipeline, pipeline.hub.listen(c.id, c.owner) as listener:
        written = await pipeline.ingest(c.id, [final(c.id, "big", text), final(c.id, "small", "after")], 0)
        first = await asyncio.wait_for(listener.get(), 10)
        second = await asyncio.wait_for(listener.get(), 10)
    assert written is not None
    assert isinstance(first, Final)
    assert isinstance(second, Final)
    assert [(first.seq, first.text), (second.seq, second.text)] == [(1, text), (2, "after")]


async def test_a_repeated_delivery_stores_nothing_and_sends_nothing(pipeline: TranscriptPipeline) -> None:
    c = await make_conversation()
    async with pipeline.hub.listen(c.id, c.owner) as listener:
        first = await pipeline.ingest(c.id, [final(c.id, "u1", "Hello"), final(c.id, "u1", "dup in batch")], 0)
        again = await pipeline.ingest(c.id, [final(c.id, "u1", "Hello")], 0)
        mixed = await pipeline.ingest(c.id, [final(c.id, "u1", "Hello"), final(c.id, "u2", "New")], 0)
        await asyncio.sleep(0.05)
        received = waiting(listener)
    assert first is not None
    assert again is not None
    assert mixed is not None
    assert [u.seq for u in first.stored] == [1]
    assert again.stored == []
    assert [(u.seq, u.item_id) for u in mixed.stored] == [(2, "u2")]
    assert await rows(c.id) == [(1, "u1", "Hello", False), (2, "u2", "New", False)]
    assert await last_seq(c.id) == 2
    assert [(e.seq, e.item_id) for e in received if isinstance(e, Final)] == [(1, "u1"), (2, "u2")]


async def test_concurrent_deliveries_store_each_item_once_without_gaps(db: str) -> None:
    """Overlapping batches at once, on real NOTIFY: a delivery that loses the race for an item falls back and
    ignores it; every final is stored once, numbered without gaps, and heard once."""
    c = await make_conversation()
    batches = [[final(c.id, f"item-{(b * 3 + i) % 40}", f"text {b}-{i}") for i in range(5)] for b in range(20)]
    async with live_pipeline("postgres", db) as pipeline, pipeline.hub.listen(c.id, c.owner) as listener:

        async def deliver(batch: list[TranscriptEvent]) -> int:
            written = await pipeline.ingest(c.id, batch, 0)
            return len(written.stored) if written is not None else len(await pipeline.apply(c.id, batch))

        counts = await asyncio.gather(*(deliver(batch) for batch in batches))
        heard = [await asyncio.wait_for(listener.get(), 10) for _ in range(40)]
    stored = await rows(c.id)
    assert sum(counts) == 40
    assert [seq for seq, *_ in stored] == list(range(1, 41))
    assert len({item for _, item, *_ in stored}) == 40
    assert await last_seq(c.id) == 40
    assert sorted(e.seq for e in heard if isinstance(e, Final)) == list(range(1, 41))


async def test_interims_in_the_batch_follow_the_finals(pipeline: TranscriptPipeline) -> None:
    c = await make_conversation()
    async with pipeline.hub.listen(c.id, c.owner) as listener:
        await pipeline.ingest(c.id, [final(c.id, "u1", "Hi"), interim(c.id, "r1", "Hel")], 0)
        first = await asyncio.wait_for(listener.get(), 2)
        second = await asyncio.wait_for(listener.get(), 2)
    assert isinstance(first, Final)
    assert (first.seq, first.text) == (1, "Hi")
    assert isinstance(second, Interim)
    assert second.text == "Hel"
    assert [e.text for e in pipeline.buffer.pending(c.id)] == ["Hel"]


async def test_the_first_user_message_is_reported_once(pipeline: TranscriptPipeline) -> None:
    c = await make_conversation()
    greeting = await pipeline.ingest(c.id, [final(c.id, "a1", "Hello, where to?", role="agent")], 0)
    said = await pipeline.ingest(c.id, [final(c.id, "u1", "Lisbon"), final(c.id, "u2", "In May")], 0)
    more = await pipeline.ingest(c.id, [final(c.id, "u3", "For a week")], 0)
    assert greeting is not None
    assert said is not None
    assert more is not None
    assert (greeting.first_user_message, said.first_user_message, more.first_user_message) == (False, True, False)
    assert said.owner == c.owner


async def interrupted_flush(c: queries.Conversation) -> None:
    async with connection() as conn, conn.transaction():
        await queries.store_finals(conn, c.id, [final(c.id, "r1", "Porto has", role="agent", interrupted=True)])


@pytest.mark.parametrize(
    "situation", ["unknown", "ended", "deleted", "earlier period", "later period", "interrupted", "interims only"]
)
async def test_what_apply_must_decide_is_left_to_it_untouched(pipeline: TranscriptPipeline, situation: str) -> None:
    c = await make_conversation()
    conversation_id, period = c.id, 0
    events = [final(c.id, "r1", "Porto has great food.", role="agent")]
    if situation == "unknown":
        conversation_id = uuid.uuid4()
    elif situation == "ended":
        async with connection() as conn:
            await conn.execute("UPDATE chat_session SET ended_at = now() WHERE id = $1", c.id)
    elif situation == "deleted":
        async with connection() as conn:
            await conn.execute("UPDATE chat_session SET deleted_at = now() WHERE id = $1", c.id)
    elif situation == "earlier period":
        async with connection() as conn:
            await conn.execute("UPDATE chat_session SET period = 1 WHERE id = $1", c.id)
    elif situation == "later period":
        period = 1
    elif situation == "interrupted":
        await interrupted_flush(c)
    else:
        events = [interim(c.id, "r1", "Porto")]
    before = await rows(c.id), await last_seq(c.id)
    assert await pipeline.ingest(conversation_id, events, period) is None
    assert (await rows(c.id), await last_seq(c.id)) == before
    assert pipeline.buffer.pending(c.id) == []
