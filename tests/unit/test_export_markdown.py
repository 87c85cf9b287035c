"""Exports and agent Markdown: the Markdown export keeps the agent's Markdown as written (escaping only the
user's text), the text export keeps the plain source text."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from chatapp.conversations.queries import Conversation, StoredUtterance
from chatapp.history.export import as_markdown, as_text
from chatapp.history.service import Detail

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
AGENT = "Here is **the plan**:\n\n1. Alfama\n2. Belém\n\n```\nprint(1)\n```"


def detail() -> Detail:
    cid = uuid.uuid4()
    conversation = Conversation(cid, uuid.uuid4(), "r", "", NOW, NOW, "Lisbon", NOW, 2, "new_chat", None)
    return Detail(
        conversation,
        [
            StoredUtterance(cid, 1, "u1", "user", "Plan *Lisbon* <b>", False, NOW),
            StoredUtterance(cid, 2, "a1", "agent", AGENT, True, NOW),
        ],
    )


def test_markdown_export_keeps_the_agents_markdown_and_escapes_the_users() -> None:
    md = as_markdown(detail())
    assert r"**You** (12:00:00): Plan \*Lisbon\* \<b\>" in md
    assert "**Agent** (12:00:00) *(interrupted)*:\n\n" + AGENT + "\n" in md


def test_text_export_is_the_plain_source_text() -> None:
    text = as_text(detail())
    assert "You: Plan *Lisbon* <b>" in text
    assert "Agent: Here is **the plan**:" in text
    assert "<strong>" not in text
