"""Exports and agent Markdown: the Markdown export keeps the agent's Markdown as written (escaping only the
user's text), the text export keeps the plain source text."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from chatapp.conversations.queries import Conversation, StoredUtterance
from chatapp.history.export import as_json, as_markdown, as_text
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


def test_text_export_is_the_plain_source_text_one_indented_block_per_message() -> None:
    text = as_text(detail())
    assert "[12:00:00] You:\n    Plan *Lisbon* <b>\n\n" in text
    # Every line of a multi-line reply is indented under its header, so the message reads as one.
    assert "[12:00:00] Agent [interrupted]:\n    Here is **the plan**:\n\n    1. Alfama\n    2. Belém\n" in text
    assert "<strong>" not in text


def test_a_line_that_looks_like_a_header_stays_inside_its_message_and_a_replaced_reply_is_marked() -> None:
    cid = uuid.uuid4()
    conversation = Conversation(cid, uuid.uuid4(), "r", "", NOW, NOW, "Tricky", NOW, 3, "new_chat", None, superseded=1)
    said = "Two lines:\n[12:00:00] Agent: not really the agent"
    tricky = Detail(
        conversation,
        [
            StoredUtterance(cid, 1, "u1", "user", said, False, NOW),
            StoredUtterance(cid, 2, "a1", "agent", "First answer", False, NOW, superseded=True),
            StoredUtterance(cid, 3, "a2", "agent", "Second answer", False, NOW),
        ],
    )
    lines = as_text(tricky).splitlines()
    headers = [line for line in lines if line.startswith("[")]
    assert headers == ["[12:00:00] You:", "[12:00:00] Agent [replaced by a retry]:", "[12:00:00] Agent:"]
    assert "    [12:00:00] Agent: not really the agent" in lines
    md = as_markdown(tricky)
    assert "**Agent** (12:00:00) *(replaced by a retry)*:" in md
    document = json.loads(as_json(tricky))
    assert document["version"] == 2
    assert document["message_count"] == 2  # the replaced reply is kept, not counted
    assert [u["superseded"] for u in document["utterances"]] == [False, True, False]
