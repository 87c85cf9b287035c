"""Reading saved conversations: keyset pages newest first, and one conversation with its transcript."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from datetime import datetime

from chatapp.conversations import store
from chatapp.database import connection
from chatapp.validation import as_utc, control_character_message, has_control_characters

PAGE_SIZE = 20


class BadCursor(ValueError):
    """The cursor was not made by us (or was mangled in transit)."""


# Whatever a crafted cursor can make decoding raise: bad base64 or JSON, wrong shapes, dates UTC cannot hold.
CURSOR_ERRORS = (
    binascii.Error,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    UnicodeDecodeError,
    OverflowError,
    RecursionError,
)


def encode_cursor(started_at: datetime, conversation_id: uuid.UUID) -> str:
    raw = json.dumps([started_at.isoformat(), str(conversation_id)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        started_at, conversation_id = json.loads(raw)
        return as_utc(datetime.fromisoformat(started_at)), uuid.UUID(conversation_id)
    except CURSOR_ERRORS:
        raise BadCursor("invalid cursor") from None


@dataclass(frozen=True)
class Page:
    items: list[store.SavedSummary]
    next_cursor: str | None


# A constant so the benchmark's bare-SQL baseline runs exactly what the app runs.
SAVED_PAGE_SQL = """
SELECT id, title, started_at, ended_at, last_seq AS message_count FROM chat_session
WHERE owner = $1 AND ended_at IS NOT NULL
  AND ($2::timestamptz IS NULL OR (started_at, id) < ($2, $3::uuid))
  AND ($5::timestamptz IS NULL OR started_at >= $5)
  AND ($6::timestamptz IS NULL OR started_at < $6)
ORDER BY started_at DESC, id DESC
LIMIT $4
"""


async def saved_page(
    owner: uuid.UUID,
    cursor: str | None = None,
    limit: int = PAGE_SIZE,
    started_from: datetime | None = None,
    started_before: datetime | None = None,
) -> Page:
    """One page of saved conversations, newest first, optionally within a date range. A keyset on
    (started_at, id) means pages neither repeat nor skip items when conversations are saved meanwhile, and
    deep pages cost as much as the first."""
    after = decode_cursor(cursor) if cursor else None
    async with connection() as conn:
        rows = await conn.fetch(
            SAVED_PAGE_SQL,
            owner,
            after[0] if after else None,
            after[1] if after else None,
            limit + 1,
            started_from,
            started_before,
        )
    items = [store.SavedSummary(**dict(row)) for row in rows[:limit]]
    next_cursor = encode_cursor(items[-1].started_at, items[-1].id) if len(rows) > limit else None
    return Page(items, next_cursor)


@dataclass(frozen=True)
class Detail:
    conversation: store.Conversation
    utterances: list[store.StoredUtterance]


async def conversation_detail(owner: uuid.UUID, conversation_id: uuid.UUID) -> Detail | None:
    """The owner's conversation with every utterance in order; None for anyone else (answered as 404)."""
    conversation = await store.get_conversation(conversation_id, owner=owner)
    if conversation is None:
        return None
    return Detail(conversation, await store.list_utterances(conversation_id))


MAX_TITLE_LENGTH = 200


class InvalidTitle(ValueError):
    pass


async def saved_conversation(owner: uuid.UUID, conversation_id: uuid.UUID) -> store.Conversation | None:
    """The owner's saved conversation; None for unknown, someone else's, or still active (all 404)."""
    conversation = await store.get_conversation(conversation_id, owner=owner)
    return conversation if conversation is not None and not conversation.active else None


async def rename(owner: uuid.UUID, conversation_id: uuid.UUID, title: str) -> store.Conversation | None:
    if has_control_characters(title):
        raise InvalidTitle(control_character_message("The title"))
    title = " ".join(title.split())
    if not title:
        raise InvalidTitle("Enter a title.")
    if len(title) > MAX_TITLE_LENGTH:
        raise InvalidTitle(f"Use at most {MAX_TITLE_LENGTH} characters.")
    async with connection() as conn, conn.transaction():
        row = await conn.fetchrow(
            f"""
            UPDATE chat_session SET title = $3 WHERE id = $1 AND owner = $2 AND ended_at IS NOT NULL
            RETURNING {store.CONVERSATION_COLUMNS}
            """,
            conversation_id,
            owner,
            title,
        )
        if row is None:
            return None
        await store.refresh_search_doc(conn, conversation_id)
    return store.Conversation(**dict(row))


async def delete(owner: uuid.UUID, conversation_id: uuid.UUID) -> bool:
    async with connection() as conn:
        status: str = await conn.execute(
            "DELETE FROM chat_session WHERE id = $1 AND owner = $2 AND ended_at IS NOT NULL", conversation_id, owner
        )
    return status.endswith(" 1")
