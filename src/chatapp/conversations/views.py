"""What the templates show: messages, the agent status line, and the HTML fragments sent over SSE."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jinja2 import Environment
from jinja2_fragments import render_block

from chatapp.conversations.events import TranscriptEvent
from chatapp.conversations.live_events import Final, Interim
from chatapp.conversations.queries import StoredUtterance

PAGE = "chat.html"

STATUS_LABELS = {
    "starting": "Starting the agent…",
    "idle": "Agent is ready",
    "listening": "Agent is listening",
    "thinking": "Agent is thinking…",
    "speaking": "Agent is answering…",
    "unavailable": "Agent unavailable",
}


def dom_id(item_id: str) -> str:
    """A stable, safe element id per utterance: interim and final share it, so swaps replace in place."""
    return "m-" + hashlib.sha256(item_id.encode()).hexdigest()[:20]


@dataclass(frozen=True, slots=True)
class MessageView:
    dom_id: str
    role: str
    text: str
    final: bool
    interrupted: bool
    seq: int | None
    created_at: datetime | None
    # A reply replaced by Retry: still shown (nothing said is lost), marked, without actions.
    superseded: bool = False
    conversation_id: uuid.UUID | None = None  # where its Retry posts

    @classmethod
    def of_utterance(cls, u: StoredUtterance) -> MessageView:
        return cls(
            dom_id(u.item_id), u.role, u.text, True, u.interrupted, u.seq, u.created_at, u.superseded, u.conversation_id
        )

    @classmethod
    def of_interim(cls, e: TranscriptEvent) -> MessageView:
        return cls(dom_id(e.item_id), e.role, e.text, False, False, None, e.timestamp, False, e.conversation_id)

    @classmethod
    def of_event(cls, e: Final | Interim) -> MessageView:
        """From a live event."""
        if isinstance(e, Final):
            return cls(
                dom_id(e.item_id),
                e.role,
                e.text,
                True,
                e.interrupted,
                e.seq,
                e.created_at,
                e.superseded,
                e.conversation_id,
            )
        return cls(dom_id(e.item_id), e.role, e.text, False, False, None, e.timestamp, False, e.conversation_id)


class Fragments:
    """Renders the chat page's named blocks alone (for SSE events and HTMX responses)."""

    def __init__(self, env: Environment) -> None:
        self.env = env

    def message(self, message: MessageView) -> str:
        return str(render_block(self.env, PAGE, "message", m=message))

    def block(self, name: str, template: str = PAGE, **context: Any) -> str:
        return str(render_block(self.env, template, name, **context))
