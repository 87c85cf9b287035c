"""Test data made through the same service functions the app uses."""

from __future__ import annotations

import uuid

from chatapp.accounts.service import User, create_user
from chatapp.conversations import store
from chatapp.conversations.events import Role, TranscriptEvent
from tests.support import PASSWORD, unique_email


async def make_user(display_name: str = "Test Traveller") -> User:
    return await create_user(unique_email(), display_name, PASSWORD)


async def make_conversation(owner: User | None = None) -> store.Conversation:
    owner = owner or await make_user()
    conversation, _ = await store.get_or_create_active(owner.id, "You are a test agent.")
    return conversation


def final(conversation_id: uuid.UUID, item_id: str, text: str, role: Role = "user", **kw: object) -> TranscriptEvent:
    return TranscriptEvent(conversation_id, item_id, role, text, final=True, **kw)  # type: ignore[arg-type]


def interim(conversation_id: uuid.UUID, item_id: str, text: str, role: Role = "agent") -> TranscriptEvent:
    return TranscriptEvent(conversation_id, item_id, role, text, final=False)
