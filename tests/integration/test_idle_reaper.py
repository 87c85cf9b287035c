"""The idle reaper ends abandoned conversations exactly as New Chat would, once, with several processes."""

from __future__ import annotations

import asyncio

from chatapp.conversations import queries
from chatapp.conversations.service import ConversationService
from chatapp.core.database import connection
from chatapp.history.reaper import reap_idle
from tests.factories import final, interim, make_user
from tests.support import idle_for


async def test_idle_conversations_are_saved_or_deleted_like_new_chat(service: ConversationService) -> None:
    spoke, silent, busy = await make_user(), await make_user(), await make_user()
    spoke_id = (await service.open(spoke.id, spoke.display_name)).conversation.id
    silent_id = (await service.open(silent.id, silent.display_name)).conversation.id
    busy_id = (await service.open(busy.id, busy.display_name)).conversation.id
    await service.pipeline.apply(spoke_id, [final(spoke_id, "u1", "Abandoned trip to Rome")])
    await service.pipeline.apply(spoke_id, [interim(spoke_id, "a1", "Rome is", role="agent")])
    await service.pipeline.apply(silent_id, [final(silent_id, "g", "Hello!", role="agent")])
    await service.pipeline.apply(busy_id, [final(busy_id, "u1", "Still here")])
    await idle_for(spoke_id, 31)
    await idle_for(silent_id, 31)
    await idle_for(busy_id, 5)

    await reap_idle(service, idle_minutes=30)

    saved = await queries.get_conversation(spoke_id)
    assert saved is not None
    assert saved.ended_at is not None
    assert saved.end_reason == "idle"
    assert saved.title == "Abandoned trip to Rome"
    assert [u.text for u in await queries.list_utterances(spoke_id)] == ["Abandoned trip to Rome", "Rome is"]
    assert (await queries.list_utterances(spoke_id))[1].interrupted
    assert await queries.get_conversation(silent_id) is None
    still = await queries.get_conversation(busy_id)
    assert still is not None
    assert still.active
    assert not service.agents.runtime.is_running(spoke_id)
    assert await queries.get_active(spoke.id) is None  # a new one opens only when the person comes back


async def test_two_processes_reaping_at_once_save_once(service: ConversationService) -> None:
    other_process = ConversationService(service.settings, service.pipeline, service.agents.runtime, service.hub)
    users = [await make_user() for _ in range(5)]
    ids = []
    for user in users:
        cid = (await service.open(user.id, user.display_name)).conversation.id
        await service.pipeline.apply(cid, [final(cid, "u1", f"Idle {user.id}")])
        await idle_for(cid, 45)
        ids.append(cid)

    ended = await asyncio.gather(reap_idle(service, 30), reap_idle(other_process, 30))

    assert sum(ended) >= len(ids)  # (other tests' idle conversations may be reaped too)
    async with connection() as conn:
        rows = await conn.fetch("SELECT id, end_reason FROM chat_session WHERE id = ANY($1::uuid[])", ids)
    assert sorted(r["id"] for r in rows) == sorted(ids)
    assert {r["end_reason"] for r in rows} == {"idle"}
    for user in users:
        assert len(await queries.recent_saved(user.id)) == 1
