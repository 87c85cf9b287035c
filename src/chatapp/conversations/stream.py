"""The one SSE stream a tab holds: its conversation's transcript and status, plus the user's own events.

On (re)connect it replays every final after the client's cursor from the database, then goes live, so
a dropped connection loses nothing; finals carry their sequence number as the SSE id and are never sent
twice on one connection.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from sse_starlette import ServerSentEvent

from chatapp.conversations import store
from chatapp.conversations.buffer import TranscriptBuffer
from chatapp.conversations.hub import Hub
from chatapp.conversations.views import Fragments, MessageView

RETRY_MS = 2000


async def conversation_events(
    hub: Hub,
    buffer: TranscriptBuffer,
    fragments: Fragments,
    conversation_id: uuid.UUID,
    user_id: uuid.UUID,
    after: int,
) -> AsyncIterator[ServerSentEvent]:
    # Listen before reading the replay, so nothing published in between is missed (the cursor dedupes).
    async with hub.listen(conversation_id, user_id) as listener:
        cursor = after
        for utterance in await store.list_utterances(conversation_id, after_seq=after):
            yield _message(fragments, MessageView.of_utterance(utterance), utterance.seq)
            cursor = utterance.seq
        for interim in buffer.pending(conversation_id):
            yield _message(fragments, MessageView.of_interim(interim), None)
        if conversation_id in hub.agent_states:
            state, detail = hub.agent_states[conversation_id]
            yield _status(fragments, conversation_id, state, detail)
        own = str(conversation_id)
        while not listener.overflowed:
            message = await listener.queue.get()
            if listener.overflowed:
                return
            kind = message.get("k")
            if message.get("c") == own:
                if kind == "final":
                    if message["s"] <= cursor:
                        continue
                    cursor = message["s"]
                    yield _message(fragments, MessageView.of_message(message), cursor)
                elif kind == "interim":
                    yield _message(fragments, MessageView.of_message(message), None)
                elif kind == "state":
                    yield _status(fragments, conversation_id, message["st"], message.get("d", ""))
                elif kind == "ended":
                    yield ServerSentEvent(data=_ended_fragment(fragments, message), event="control")
                    return
            elif kind == "history":
                yield ServerSentEvent(
                    data=fragments.block("history_list", **_history_context(message)), event="control"
                )


def _ended_fragment(fragments: Fragments, message: dict[str, Any]) -> str:
    """New Chat elsewhere: follow it to the new conversation. Ended for being idle (or the room closing):
    say so and let the person start again, rather than opening agents for a tab nobody is looking at."""
    if message.get("r") in ("new_chat", "api"):
        return fragments.block("panel_refresh", template="_live.html")
    return fragments.block("panel_saved", template="_live.html", reason=message.get("r", ""))


def _message(fragments: Fragments, view: MessageView, seq: int | None) -> ServerSentEvent:
    return ServerSentEvent(data=fragments.message(view), event="message", id=str(seq) if seq else None, retry=RETRY_MS)


def _status(fragments: Fragments, conversation_id: uuid.UUID, state: str, detail: str) -> ServerSentEvent:
    html = fragments.block("agent_status", agent_state=state, agent_detail=detail, conversation_id=conversation_id)
    return ServerSentEvent(data=html, event="status")


def _history_context(message: dict[str, Any]) -> dict[str, Any]:
    return {"recent": message.get("recent", []), "oob": True}
