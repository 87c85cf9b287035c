"""Faults in the voice path, with the real LiveKit server, worker and app: the worker killed with `kill -9` in the
middle of a spoken reply loses nothing the app acknowledged, and the conversation still ends cleanly."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from chatapp.core.database import connection
from tests.fakes.openai_chat import Reply
from tests.support import htmx
from tests.support_livekit import TURN_WITHIN, VoiceStack, in_a_room, speech_pcm

pytestmark = pytest.mark.voice

GREETING = "Hello, where to?"
SAID = "what is the weather like"
LONG_ANSWER = (
    "The weather in May is mild. Mornings are cool and bright, afternoons warm enough for a walk by the river, "
    "and evenings call for a light jacket. Rain is rare, but bring an umbrella for the odd shower in the hills."
)


async def acknowledged_interim(voice: VoiceStack, cid: uuid.UUID, starts: str) -> dict[str, Any]:
    """Wait until the app has acknowledged an interim of the agent's reply beginning with `starts`."""
    assert voice.ingest is not None
    deadline = time.monotonic() + TURN_WITHIN
    while True:
        found = [
            e
            for e in voice.ingest.acknowledged(cid)
            if e["role"] == "agent" and not e["final"] and e["text"].startswith(starts)
        ]
        if found:
            return found[-1]
        assert time.monotonic() < deadline, "no interim of the reply was acknowledged"
        await asyncio.sleep(0.02)


async def test_the_worker_killed_mid_reply_loses_nothing_acknowledged_and_the_conversation_still_ends_cleanly(
    voice: VoiceStack,
) -> None:
    voice.llm.script[:] = [Reply(GREETING), Reply(LONG_ANSWER)]
    async with in_a_room(voice, close=False) as room:
        cid, name = room.conversation_id, room.person.room.name
        spoken = await room.person.say(speech_pcm(SAID))
        await room.person.agent_speaks_after(spoken, TURN_WITHIN)
        await acknowledged_interim(voice, cid, "The weather in May")
        killed = voice.worker.kill_9()  # mid-reply: it is speaking, and its interims are arriving
        assert voice.ingest is not None
        acknowledged = voice.ingest.acknowledged(cid)
        relaunched = voice.worker.relaunched()
        # The page's New Chat ends it as cleanly as ever: saved, the room deleted.
        ended = await room.client.post(
            "/conversations/new", data={"conversation_id": str(cid)}, headers=htmx(room.client)
        )
    try:
        assert len(killed) >= 2  # the worker and at least the job's process
        assert ended.status_code == 200
        assert "Saved" in ended.text
        # Nothing acknowledged is lost: every acknowledged final is stored once, and the reply the worker was
        # killed in is there as far as the app had heard it, marked interrupted.
        async with connection() as conn:
            rows = await conn.fetch(
                "SELECT item_id, role, text, interrupted FROM utterance WHERE session = $1 ORDER BY seq", cid
            )
            saved = await conn.fetchval("SELECT ended_at IS NOT NULL FROM chat_session WHERE id = $1", cid)
        assert saved
        stored = {r["item_id"]: (r["role"], r["text"], r["interrupted"]) for r in rows}
        assert len(stored) == len(rows)  # each once
        finals = [e for e in acknowledged if e["final"]]
        assert [(e["role"], e["text"]) for e in finals] == [("agent", GREETING), ("user", SAID)]
        for event in finals:
            assert stored[event["item_id"]] == (event["role"], event["text"], event["interrupted"])
        last_interim: dict[str, dict[str, Any]] = {}
        for event in acknowledged:
            if not event["final"]:
                last_interim[event["item_id"]] = event
        unfinished = [e for item, e in last_interim.items() if item not in {f["item_id"] for f in finals}]
        assert [e["role"] for e in unfinished] == ["agent"]
        [cut] = unfinished
        assert stored[cut["item_id"]] == ("agent", cut["text"], True)
        assert list(stored) == [*(e["item_id"] for e in finals), cut["item_id"]]  # in the order said
        await voice.livekit.wait_room_gone(name)
    finally:
        await asyncio.to_thread(relaunched.wait_registered_again)
        voice.worker = relaunched  # put back for the tests that follow
