"""Test data made through the same service functions the app uses."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from chatapp.accounts.service import User, create_user
from chatapp.conversations import queries
from chatapp.conversations.agent_access import room_name_for
from chatapp.conversations.events import Role, TranscriptEvent
from chatapp.core.database import connection
from tests.support import PASSWORD, unique_email


async def make_user(display_name: str = "Test Traveller") -> User:
    return await create_user(unique_email(), display_name, PASSWORD)


async def make_conversation(owner: User | None = None) -> queries.Conversation:
    owner = owner or await make_user()
    conversation, _ = await queries.get_or_create_active(owner.id, "You are a test agent.")
    return conversation


def final(conversation_id: uuid.UUID, item_id: str, text: str, role: Role = "user", **kw: object) -> TranscriptEvent:
    return TranscriptEvent(conversation_id, item_id, role, text, final=True, **kw)  # type: ignore[arg-type]


def interim(conversation_id: uuid.UUID, item_id: str, text: str, role: Role = "agent") -> TranscriptEvent:
    return TranscriptEvent(conversation_id, item_id, role, text, final=False)


async def make_saved(
    owner: User,
    title: str,
    started_at: datetime,
    lines: list[tuple[Role, str]] | None = None,
    minutes: int = 5,
) -> uuid.UUID:
    """A saved conversation written straight to the tables (fast enough to make hundreds)."""
    lines = lines if lines is not None else [("user", title)]
    conversation_id = uuid.uuid4()
    async with connection() as conn, conn.transaction():
        await conn.execute(
            """
            INSERT INTO chat_session (id, room_name, owner, system_prompt, started_at, ended_at, title,
                                      last_activity_at, last_seq, end_reason)
            VALUES ($1, $2, $3, '', $4, $5, $6, $5, $7, 'new_chat')
            """,
            conversation_id,
            room_name_for(conversation_id),
            owner.id,
            started_at,
            started_at + timedelta(minutes=minutes),
            title,
            len(lines),
        )
        for seq, (role, text) in enumerate(lines, start=1):
            await conn.execute(
                "INSERT INTO utterance (session, seq, item_id, role, text, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                conversation_id,
                seq,
                f"item-{seq}",
                role,
                text,
                started_at + timedelta(seconds=seq),
            )
        await queries.refresh_search_doc(conn, conversation_id)
    return conversation_id


def chatgpt_conversation(conversation_id: str = "c0ffee-1", title: str = "Packing for Iceland") -> dict[str, Any]:
    def node(node_id: str, parent: str | None, children: list[str], role: str | None, text: str, at: float) -> Any:
        message = None
        if role:
            message = {
                "id": node_id,
                "author": {"role": role},
                "create_time": at,
                "content": {"content_type": "text", "parts": [text]},
            }
        return {"id": node_id, "message": message, "parent": parent, "children": children}

    t = 1_700_000_000.0
    mapping = {
        "root": node("root", None, ["sys"], None, "", t),
        "sys": node("sys", "root", ["u1"], "system", "You are ChatGPT.", t),
        "u1": node("u1", "sys", ["a1-old", "a1"], "user", "What should I pack for Iceland in March?", t + 10),
        "a1-old": node("a1-old", "u1", [], "assistant", "A regenerated answer nobody kept.", t + 20),
        "a1": node("a1", "u1", ["tool", "u2"], "assistant", "Layers, a waterproof shell and crampons.", t + 30),
        "tool": node("tool", "a1", [], "tool", "search results", t + 31),
        "u2": node("u2", "a1", ["a2"], "user", "And for the Blue Lagoon?", t + 40),
        "a2": node("a2", "u2", [], "assistant", "A swimsuit and conditioner.", t + 50),
    }
    return {
        "title": title,
        "create_time": t,
        "update_time": t + 60,
        "mapping": mapping,
        "current_node": "a2",
        "id": conversation_id,
        "conversation_id": conversation_id,
    }
