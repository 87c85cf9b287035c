"""How an agent outside the app process reaches one conversation: the LiveKit room it meets the person in,
and the bearer token it reports the transcript with. Built and checked here only, so both ends agree."""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid

_ROOM = re.compile(r"^chat-([0-9a-f]{32})(?:-([1-9][0-9]{0,8}))?$")


def room_name_for(conversation_id: uuid.UUID, period: int = 0) -> str:
    """The room of one active period of the conversation: `chat-<conversation id hex>` for the first (as rooms
    were always named), `chat-<hex>-<n>` once it was reopened n times, so every room name stays unique."""
    return f"chat-{conversation_id.hex}" if period == 0 else f"chat-{conversation_id.hex}-{period}"


def room_for(room_name: str) -> tuple[uuid.UUID, int] | None:
    """The conversation and period a room belongs to, if it is one of ours (the inverse of `room_name_for`)."""
    match = _ROOM.match(room_name)
    return (uuid.UUID(hex=match.group(1)), int(match.group(2) or 0)) if match else None


def conversation_for_room(room_name: str) -> uuid.UUID | None:
    """The conversation a room belongs to, whichever period it served."""
    found = room_for(room_name)
    return found[0] if found else None


def ingest_token(secret_key: str, conversation_id: uuid.UUID, period: int = 0) -> str:
    """The bearer token an out-of-process agent uses to report one period of a conversation's transcript: each
    reopening gets a token of its own, so an old period's worker can never pass for the current one."""
    subject = f"ingest:{conversation_id}" if period == 0 else f"ingest:{conversation_id}:{period}"
    return hmac.new(secret_key.encode(), subject.encode(), hashlib.sha256).hexdigest()


def valid_ingest_token(secret_key: str, conversation_id: uuid.UUID, token: str, period: int = 0) -> bool:
    """Whether `token` is the ingest token of that period of the conversation (compared in constant time)."""
    return hmac.compare_digest(ingest_token(secret_key, conversation_id, period), token)
