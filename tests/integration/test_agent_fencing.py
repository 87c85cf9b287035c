"""Fencing of in-process agents across app processes: a lease claimed anew gets a new generation, and an agent's
finals under an older one are refused (a host cut off while its lease was taken over writes nothing for that
conversation when it is back); an agent whose lease is not renewed in time says nothing live meanwhile."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from chatapp.conversations import queries
from chatapp.conversations.ownership import LeaseOwnership
from chatapp.conversations.pipeline import TranscriptPipeline
from chatapp.core.database import connection
from tests.factories import final, make_conversation


async def agent_texts(conversation_id: uuid.UUID) -> list[str]:
    async with connection() as conn:
        rows = await conn.fetch("SELECT text FROM utterance WHERE session = $1 ORDER BY seq", conversation_id)
    return [row["text"] for row in rows]


async def test_finals_under_a_lease_taken_over_are_refused_and_the_new_holders_are_stored(
    pipeline: TranscriptPipeline,
) -> None:
    c = await make_conversation()
    cut_off, other = LeaseOwnership(lease_seconds=0.2), LeaseOwnership(lease_seconds=3)
    cut_off.holder, other.holder = f"cut-{uuid.uuid4().hex[:8]}", f"other-{uuid.uuid4().hex[:8]}"
    assert await cut_off.claim(c.id)
    old = cut_off.generation(c.id)
    assert old is not None
    assert not await other.claim(c.id)  # the lease still runs
    await asyncio.sleep(0.3)
    assert await other.claim(c.id)  # expired: taken over, under a new generation
    new = other.generation(c.id)
    assert new is not None
    assert new != old

    with pytest.raises(queries.LeaseLost):
        await pipeline.apply(c.id, [final(c.id, "a-old", "stale reply", role="agent", lease=old)])
    await pipeline.apply(c.id, [final(c.id, "a-new", "the new holder's reply", role="agent", lease=new)])
    await pipeline.apply(c.id, [final(c.id, "u1", "typed by the person")])  # not an agent's: never fenced
    assert await agent_texts(c.id) == ["the new holder's reply", "typed by the person"]
    assert await cut_off.renew([c.id]) == set()  # and the old holder learns it lost the lease


async def test_a_lease_renewed_by_its_holder_keeps_its_generation_and_a_released_one_lets_last_finals_in(
    pipeline: TranscriptPipeline,
) -> None:
    c = await make_conversation()
    holder = LeaseOwnership(lease_seconds=3, fence_seconds=0.2)
    holder.holder = f"holder-{uuid.uuid4().hex[:8]}"
    assert await holder.claim(c.id)
    generation = holder.generation(c.id)
    assert await holder.claim(c.id)  # claimed again while held: the same lease
    assert holder.generation(c.id) == generation
    assert holder.overdue([c.id]) == set()
    await asyncio.sleep(0.3)
    assert holder.overdue([c.id]) == {c.id}  # not renewed for fence_seconds: held before the lease can expire
    assert await holder.renew([c.id]) == {c.id}
    assert holder.overdue([c.id]) == set()
    await holder.release(c.id)  # New Chat ended it: the agent's last final still lands
    await pipeline.apply(c.id, [final(c.id, "a1", "last words", role="agent", lease=generation)])
    assert await agent_texts(c.id) == ["last words"]
