"""The real LiveKit server's webhooks reach the app: `room_finished` ends the room's conversation as the idle
reaper would (saved, since the person spoke); a webhook with a bad signature is refused and changes nothing."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from chatapp.conversations.agent_access import room_name_for
from chatapp.core.database import connection
from tests.fakes.livekit import room_finished, signed_webhook
from tests.fakes.openai_chat import Reply
from tests.support import client_ip, open_conversation, signup, snapshot, type_text, wait_for
from tests.support_livekit import VoiceStack, in_a_room

pytestmark = pytest.mark.voice


async def ended_at(conversation_id: uuid.UUID) -> object:
    async with connection() as conn:
        return await conn.fetchval("SELECT ended_at FROM chat_session WHERE id = $1", conversation_id)


async def test_the_real_servers_room_finished_webhook_saves_the_conversation_as_the_idle_reaper_would(
    voice: VoiceStack,
) -> None:
    voice.llm.script[:] = [Reply("Hello, where to?")]
    async with in_a_room(voice, close=False) as room:
        await type_text(room.client, voice.app, room.conversation_id, "A week in Kyoto")
    cid = room.conversation_id
    assert await ended_at(cid) is None  # the person left; the agent (and so the room) stays
    deleted = time.monotonic()
    await voice.livekit.delete_room(room_name_for(cid))  # as LiveKit does when a room's time is up

    async def saved() -> bool:
        return await ended_at(cid) is not None

    await wait_for(saved, 15.0)
    voice.timings["room_finished_webhook_to_saved"] = time.monotonic() - deleted
    await voice.worker.wait_job_ended(cid)
    async with connection() as conn:
        row = await conn.fetchrow("SELECT ended_at, title FROM chat_session WHERE id = $1", cid)
    assert row is not None
    assert row["title"] == "A week in Kyoto"
    assert room_name_for(cid) not in await voice.livekit.room_names()


async def test_a_webhook_with_a_bad_signature_is_refused_and_changes_nothing(voice: VoiceStack) -> None:
    async with httpx.AsyncClient(base_url=voice.app.url, headers={"X-Forwarded-For": client_ip()}, timeout=15) as c:
        await signup(c)
        cid = await open_conversation(c)  # its room exists on the real server now, and the agent is dispatched
        await type_text(c, voice.app, cid, "Somewhere warm")
        before = await snapshot(cid)
        event = room_finished(room_name_for(cid))
        forged = signed_webhook(event, api_key=voice.livekit.api_key, api_secret="not-the-secret-" * 4)
        unsigned = signed_webhook(event, api_key="another-key", api_secret=voice.livekit.api_secret)
        answers = [
            await c.post("/livekit/webhook", content=body, headers={"Authorization": auth})
            for body, auth in (forged, unsigned, (forged[0], ""))
        ]
        assert [a.status_code for a in answers] == [401, 401, 401]
        assert await snapshot(cid) == before
        assert await ended_at(cid) is None
        assert room_name_for(cid) in await voice.livekit.room_names()
        await voice.livekit.delete_room(room_name_for(cid))  # its agent may not have joined yet: it never will
        await voice.worker.wait_job_ended(cid)
