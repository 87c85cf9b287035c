"""Read-only share links: an unguessable token per saved conversation, revocable by its owner."""

from __future__ import annotations

import re
import secrets
import uuid

from chatapp.database import connection

SHARE_TOKEN = re.compile(r"[\w-]{1,64}", re.ASCII)  # what token_urlsafe makes


async def live_token(conversation_id: uuid.UUID) -> str | None:
    async with connection() as conn:
        token: str | None = await conn.fetchval(
            "SELECT token FROM share_link WHERE session = $1 AND revoked_at IS NULL", conversation_id
        )
    return token


async def create(conversation_id: uuid.UUID) -> str:
    """The conversation's live link, creating one (32 random bytes) when there is none."""
    token = secrets.token_urlsafe(32)
    async with connection() as conn:
        created: str | None = await conn.fetchval(
            """
            INSERT INTO share_link (token, session) VALUES ($1, $2)
            ON CONFLICT (session) WHERE revoked_at IS NULL DO NOTHING
            RETURNING token
            """,
            token,
            conversation_id,
        )
    return created or (await live_token(conversation_id)) or token


async def revoke(conversation_id: uuid.UUID) -> None:
    async with connection() as conn:
        await conn.execute(
            "UPDATE share_link SET revoked_at = now() WHERE session = $1 AND revoked_at IS NULL", conversation_id
        )


async def shared_conversation_id(token: str) -> uuid.UUID | None:
    if not SHARE_TOKEN.fullmatch(token):  # e.g. a NUL, which PostgreSQL would refuse with an error
        return None
    async with connection() as conn:
        conversation_id: uuid.UUID | None = await conn.fetchval(
            """
            SELECT l.session FROM share_link l JOIN chat_session s ON s.id = l.session
            WHERE l.token = $1 AND l.revoked_at IS NULL AND s.ended_at IS NOT NULL
            """,
            token,
        )
    return conversation_id


async def was_revoked(token: str) -> bool:
    """A link its owner revoked (a 410 says so), as opposed to one that never existed (404)."""
    if not SHARE_TOKEN.fullmatch(token):
        return False
    async with connection() as conn:
        revoked: bool = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM share_link WHERE token = $1 AND revoked_at IS NOT NULL)", token
        )
    return revoked
