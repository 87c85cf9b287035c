"""Read-only share links: an unguessable token per saved conversation, revocable by its owner."""

from __future__ import annotations

import re
import secrets
import uuid
from datetime import UTC, datetime

from chatapp.core.database import connection
from chatapp.core.tables import ShareLink

SHARE_TOKEN = re.compile(r"[\w-]{1,64}", re.ASCII)  # what token_urlsafe makes


async def live_token(conversation_id: uuid.UUID) -> str | None:
    row = await (
        ShareLink.select(ShareLink.token)
        .where((ShareLink.conversation == conversation_id) & ShareLink.revoked_at.is_null())
        .first()
    )
    return None if row is None else str(row["token"])


async def create(conversation_id: uuid.UUID) -> str:
    """The conversation's live link, creating one (32 random bytes) when there is none."""
    token = secrets.token_urlsafe(32)
    async with connection() as conn:
        # Raw SQL: the conflict target is the partial unique index (one live link per conversation), whose
        # predicate the query builder's on_conflict cannot name.
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
    await ShareLink.update({ShareLink.revoked_at: datetime.now(UTC)}).where(
        (ShareLink.conversation == conversation_id) & ShareLink.revoked_at.is_null()
    )


async def shared_conversation_id(token: str) -> uuid.UUID | None:
    if not SHARE_TOKEN.fullmatch(token):  # e.g. a NUL, which PostgreSQL would refuse with an error
        return None
    row = await (
        ShareLink.select(ShareLink.conversation.as_alias("conversation"))
        .where(
            (ShareLink.token == token)
            & ShareLink.revoked_at.is_null()
            & ShareLink.conversation._.ended_at.is_not_null()  # only a saved conversation is shown
        )
        .first()
    )
    return None if row is None else row["conversation"]


async def was_revoked(token: str) -> bool:
    """A link its owner revoked (a 410 says so), as opposed to one that never existed (404)."""
    if not SHARE_TOKEN.fullmatch(token):
        return False
    revoked: bool = await ShareLink.exists().where((ShareLink.token == token) & ShareLink.revoked_at.is_not_null())
    return revoked
