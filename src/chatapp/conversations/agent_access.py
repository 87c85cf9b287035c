"""How an agent outside the app process reaches one conversation: the LiveKit room it meets the person in,
and the bearer token it reports the transcript with. Built and checked here only, so both ends agree."""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid

_ROOM = re.compile(r"^chat-([0-9a-f]{32})$")


def room_name_for(conversation_id: uuid.UUID) -> str:
    """The conversation's room: `chat-<conversation id hex>`."""
    return f"chat-{conversation_id.hex}"


def conversation_for_room(room_name: str) -> uuid.UUID | None:
    """The conversation a room belongs to, if it is one of ours (the inverse of `room_name_for`)."""
    match = _ROOM.match(room_name)
    return uuid.UUID(hex=match.group(1)) if match else None


def ingest_token(secret_key: str, conversation_id: uuid.UUID) -> str:
    """The bearer token an out-of-process agent uses to report one conversation's transcript."""
    return hmac.new(secret_key.encode(), f"ingest:{conversation_id}".encode(), hashlib.sha256).hexdigest()


def valid_ingest_token(secret_key: str, conversation_id: uuid.UUID, token: str) -> bool:
    """Whether `token` is the conversation's ingest token (compared in constant time)."""
    return hmac.compare_digest(ingest_token(secret_key, conversation_id), token)
