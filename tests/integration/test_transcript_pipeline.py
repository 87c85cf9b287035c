"""Finals are durable and idempotent with gapless sequences; interims stay in the buffer."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from chatapp.conversations import queries
from chatapp.conversations.live_events import Final, Interim
from chatapp.conversations.pipeline import TranscriptPipeline
from chatapp.core.database import connection
from tests.factories import final, interim, make_conversation


async def rows(conversation_id: uuid.UUID) -> list[tuple[int, str, str, bool]]:
    async with connection() as conn:
        records = await conn.fetch(
            "SELECT seq, item_id, text, interrupted FROM utterance WHERE session = $1 ORDER BY seq",
            conversation_id,
        )
    return [(r["seq"], r["item_id"], r["text"], r["interrupted"]) for r in records]


async def test_a_repeated_final_is_stored_once(pipeline: TranscriptPipeline) -> None:
    c = await make_conversation()
    first = await pipeline.apply(c.id, [final(c.id, "u1", "Hello")])
    again = await pipeline.apply(c.id, [final(c.id, "u1", "Hello")])
    assert [u.seq for u in first] == [1]
    assert again == []
    assert await rows(c.id) == [(1, "u1", "Hello", False)]
    conversation = await queries.get_conversation(c.id)
    assert conversation is not None
    assert conversation.message_count == 1


async def test_sequences_follow_arrival_without_gaps(pipeline: TranscriptPipeline) -> None:
    c = await make_conversation()
    await pipeline.apply(c.id, [final(c.id, "b", "second said, first arrived", role="agent")])
    await pipeline.apply(c.id, [final(c.id, "a", "yes"), final(c.id, "b", "dup in batch"), final(c.id, "c", "yes")])
    assert await rows(c.id) == [
        (1, "b", "second said, first arrived", False),
        (2, "a", "yes", False),
        (3, "c", "yes", False),
    ]


async def test_interim_then_final(pipeline: TranscriptPipeline) -> None:
    c = await make_conversation()
    await pipeline.apply(c.id, [interim(c.id, "r1", "Lisbon is")])
    await pipeline.apply(c.id, [interim(c.id, "r1", "Lisbon is lovely")])
    assert [e.text for e in pipeline.buffer.pending(c.id)] == ["Lisbon is lovely"]
    assert await rows(c.id) == []
    await pipeline.apply(c.id, [final(c.id, "r1", "Lisbon is lovely in May.", role="agent")])
    assert pipeline.buffer.pending(c.id) == []
    # An interim that arrives after its final is stale and ignored.
    await pipeline.apply(c.id, [interim(c.id, "r1", "Lisbon")])
    assert pipeline.buffer.pending(c.id) == []
    assert await rows(c.id) == [(1, "r1", "Lisbon is lovely in May.", False)]


async def test_finals_for_an_ended_conversation_are_still_stored(pipeline: TranscriptPipeline) -> None:
    c = await make_conversation()
    await pipeline.apply(c.id, [final(c.id, "u1", "Plan a trip")])
    async with connection() as conn:
        await conn.execute("UPDATE chat_session SET ended_at = now() WHERE id = $1", c.id)
    stored = await pipeline.apply(c.id, [final(c.id, "late", "A late reply", role="agent")])
    assert [u.seq for u in stored] == [2]
    assert [r[1] for r in await rows(c.id)] == ["u1", "late"]


async def test_an_interrupted_flush_is_completed_by_its_late_final(pipeline: TranscriptPipeline) -> None:
    c = await make_conversation()
    await pipeline.apply(c.id, [final(c.id, "r1", "Porto has", role="agent", interrupted=True)])
    completed = await pipeline.apply(c.id, [final(c.id, "r1", "Porto has great food.", role="agent")])
    assert [(u.seq, u.text, u.interrupted) for u in completed] == [(1, "Porto has great food.", False)]
    assert await rows(c.id) == [(1, "r1", "Porto has great food.", False)]


async def test_concurrent_ingests_for_one_conversation(pipeline: TranscriptPipeline) -> None:
    c = await make_conversation()
    batches = [[final(c.id, f"item-{(b * 3 + i) % 40}", f"text {b}-{i}") for i in range(5)] for b in range(20)]
    await asyncio.gather(*(pipeline.apply(c.id, batch) for batch in batches))
    stored = await rows(c.id)
    assert [seq for seq, *_ in stored] == list(range(1, 41))
    assert len({item for _, item, *_ in stored}) == 40
    conversation = await queries.get_conversation(c.id)
    assert conversation is not None
    assert conversation.last_seq == 40


async def test_unknown_conversation_is_refused(pipeline: TranscriptPipeline) -> None:
    missing = uuid.uuid4()
    with pytest.raises(queries.UnknownConversation):
        await pipeline.apply(missing, [final(missing, "x", "hello")])


async def test_every_stored_final_is_published_after_commit(pipeline: TranscriptPipeline) -> None:
    c = await make_conversation()
    async with pipeline.hub.listen(c.id, c.owner) as listener:
        await pipeline.apply(c.id, [final(c.id, "u1", "Hi"), interim(c.id, "r1", "Hel")])
        first = await asyncio.wait_for(listener.get(), 2)
        second = await asyncio.wait_for(listener.get(), 2)
    assert isinstance(first, Final)
    assert (first.seq, first.text) == (1, "Hi")
    assert isinstance(second, Interim)
    assert second.text == "Hel"
