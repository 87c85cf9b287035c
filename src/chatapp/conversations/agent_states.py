"""The agent's latest status per conversation, as every process has heard it."""

from __future__ import annotations

import uuid

from chatapp.conversations.live_events import State


class AgentStates:
    """Fed by the hub with every `State` event (from any process), so a page or stream opened later shows the
    status line at once instead of waiting for the agent's next change; an ended conversation is forgotten."""

    def __init__(self) -> None:
        self._states: dict[uuid.UUID, tuple[str, str]] = {}

    def record(self, event: State) -> None:
        self._states[event.conversation_id] = (event.state, event.detail)

    def get(self, conversation_id: uuid.UUID) -> tuple[str, str] | None:
        """(state, detail), or None when nothing was heard yet."""
        return self._states.get(conversation_id)

    def forget(self, conversation_id: uuid.UUID) -> None:
        self._states.pop(conversation_id, None)
