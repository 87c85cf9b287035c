"""The one shape every transcript producer speaks: typed text, dictation, the in-process agent, LiveKit."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

Role = Literal["user", "agent"]
AgentState = Literal["starting", "idle", "listening", "thinking", "speaking", "unavailable"]

MAX_TEXT_LENGTH = 10_000
MAX_ITEM_ID_LENGTH = 128


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class TranscriptEvent:
    """One utterance update. `item_id` is stable per utterance and makes every delivery idempotent.

    Interims (`final=False`) carry the whole text so far and replace each other; a final is persisted.
    """

    conversation_id: uuid.UUID
    item_id: str
    role: Role
    text: str
    final: bool
    interrupted: bool = False
    timestamp: datetime = field(default_factory=utcnow)
    # The agent lease generation its in-process agent runs under (ownership.py); its finals are refused once the
    # lease names another (fencing). None for every other producer.
    lease: int | None = None

    def __post_init__(self) -> None:
        # A longer id would fail every later save of the conversation (item_id is varchar(128)):
        # callers that add a prefix must leave room for it when they validate the client's part.
        if len(self.item_id) > MAX_ITEM_ID_LENGTH:
            raise ValueError(f"item_id longer than {MAX_ITEM_ID_LENGTH} characters")


@dataclass(frozen=True, slots=True)
class AgentStateEvent:
    """What the agent is doing, shown as a status line in the chat panel."""

    conversation_id: uuid.UUID
    state: AgentState
    detail: str = ""
