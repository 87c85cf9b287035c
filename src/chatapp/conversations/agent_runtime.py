"""The interface the app uses to run an agent for a conversation, whatever runs it (in-process or LiveKit)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Literal, Protocol

from chatapp.conversations.events import AgentStateEvent, TranscriptEvent


class EventSink(Protocol):
    """Where a runtime reports what happens; the app's implementation is the transcript pipeline."""

    async def transcript(self, event: TranscriptEvent) -> None: ...

    async def agent_state(self, event: AgentStateEvent) -> None: ...


@dataclass(frozen=True)
class ConversationInfo:
    """What an agent needs to know about the conversation it serves."""

    id: uuid.UUID
    room_name: str
    system_prompt: str
    user_display_name: str = ""
    # The person in the conversation: their LiveKit participant identity.
    user_id: uuid.UUID | None = None
    # Earlier turns as (role, text), oldest first: set when a saved conversation is continued.
    history: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    # The last history item is a user message nobody answered (its agent's process died, or the app restarted):
    # an agent that can, answers it first instead of greeting.
    answer_last: bool = False
    # Which active period (0, then one per reopening) the agent serves: its room and ingest token are that period's.
    period: int = 0
    # The agent lease generation this process claimed for it (several app processes), for fencing its writes.
    lease: int | None = None


@dataclass(frozen=True)
class StartInfo:
    """What the browser needs to reach the agent: text mode posts to the app; voice mode joins a room."""

    mode: Literal["text", "voice"]
    livekit_url: str = ""
    participant_token: str = ""


DEFAULT_START_FAILURE = "The agent could not be started."


class AgentStartError(RuntimeError):
    """The agent could not be started; the conversation exists and the user can retry.

    `detail` is what the chat panel shows: safe for the user, free of hosts, keys and tokens.
    """

    def __init__(self, message: str = "", *, detail: str = DEFAULT_START_FAILURE) -> None:
        super().__init__(message or detail)
        self.detail = detail


class AgentRuntime(Protocol):
    # Whether typed text posted to the app reaches the agent through send_text: True in-process (so text for an
    # agent that runs in another app process is handed over to it); False for LiveKit, whose agent hears typed
    # text over the room's chat instead.
    answers_typed_text: bool

    async def start(self, conversation: ConversationInfo) -> StartInfo:
        """Start (or find already running) the agent for `conversation`; idempotent."""
        ...

    async def send_text(self, conversation_id: uuid.UUID, text: str) -> None:
        """Give typed user text to the agent (the app has already stored it as a final)."""
        ...

    async def interrupt(self, conversation_id: uuid.UUID) -> bool:
        """Stop the reply the agent is giving (the Stop button): what it said so far is kept as an interrupted
        final. True when a reply was cut; False when none was under way here (or the runtime cannot)."""
        ...

    async def stop(self, conversation_id: uuid.UUID) -> None:
        """Stop the agent; idempotent, and never raises for an agent that is already gone."""
        ...

    def is_running(self, conversation_id: uuid.UUID) -> bool: ...

    async def aclose(self) -> None:
        """Stop every agent (app shutdown)."""
        ...
