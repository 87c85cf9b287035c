"""Exports of one conversation: JSON (complete, documented in the README), Markdown and plain text.

Each format registers itself here with `@exporter(...)`: the conversation page's download links loop over
EXPORTERS and the export route looks the format up in it, so a new format is one function in this file.

The agent's replies are Markdown: the Markdown export keeps them as written, the text export as the plain
source text; the user's text is escaped in the Markdown export so it reads exactly as typed. A reply replaced by
Retry is in every export, marked (version 2 of the JSON format added `superseded`)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chatapp.history.service import Detail

# 2: each utterance says whether it was `superseded` (a reply replaced by Retry; kept, not counted), and the
# conversation lists its `periods`: when it was active, the first time and each time it was reopened (a file
# without them, version 1 or 2, is read as one period from started_at to ended_at).
EXPORT_VERSION = 2

Render = Callable[[Detail], str]


@dataclass(frozen=True)
class Exporter:
    """One download format: `name` is its URL segment (/history/<id>/export/<name>), `label` its link text."""

    name: str
    label: str
    media_type: str
    extension: str
    render: Render


# In registration order, which is the order of the page's links.
EXPORTERS: dict[str, Exporter] = {}


def exporter(name: str, label: str, media_type: str, extension: str | None = None) -> Callable[[Render], Render]:
    """Register the decorated function as the `name` export format."""

    def register(render: Render) -> Render:
        if name in EXPORTERS:
            raise ValueError(f"export format {name!r} is registered twice")
        EXPORTERS[name] = Exporter(name, label, media_type, extension or name, render)
        return render

    return register


def filename(detail: Detail, extension: str) -> str:
    """e.g. chatapp-2026-11-29-plan-a-trip-to-lisbon.md"""
    slug = re.sub(r"[^a-z0-9]+", "-", (detail.conversation.title or "conversation").lower()).strip("-")[:50]
    return f"chatapp-{detail.conversation.started_at:%Y-%m-%d}-{slug or 'conversation'}.{extension}"


def _speaker(role: str) -> str:
    return "You" if role == "user" else "Agent"


@exporter("json", "JSON", "application/json")
def as_json(detail: Detail) -> str:
    c = detail.conversation
    document: dict[str, Any] = {
        "format": "chatapp.conversation",
        "version": EXPORT_VERSION,
        "id": str(c.id),
        "title": c.title,
        "started_at": c.started_at.isoformat(),
        "ended_at": c.ended_at.isoformat() if c.ended_at else None,
        "end_reason": c.end_reason,
        "message_count": c.message_count,
        "continued_from": str(c.continued_from) if c.continued_from else None,
        "periods": [
            {
                "n": p.n,
                "started_at": p.started_at.isoformat(),
                "ended_at": p.ended_at.isoformat() if p.ended_at else None,
                "end_reason": p.end_reason,
                "first_seq": p.after_seq + 1,
            }
            for p in detail.periods
        ],
        "utterances": [
            {
                "seq": u.seq,
                "item_id": u.item_id,
                "role": u.role,
                "text": u.text,
                "interrupted": u.interrupted,
                "superseded": u.superseded,
                "created_at": u.created_at.isoformat(),
            }
            for u in detail.utterances
        ],
    }
    return json.dumps(document, ensure_ascii=False, indent=2)


def _md_escape(text: str) -> str:
    return re.sub(r"([\\`*_{}\[\]<>()#+\-.!|])", r"\\\1", text)


@exporter("md", "Markdown", "text/markdown; charset=utf-8")
def as_markdown(detail: Detail) -> str:
    c = detail.conversation
    lines = [f"# {_md_escape(c.title or 'Conversation')}", "", f"*Started {c.started_at:%Y-%m-%d %H:%M} UTC*", ""]
    reopened = detail.reopened_before()
    for u in detail.utterances:
        if (period := reopened.get(u.seq)) is not None:
            lines += ["---", "", f"*Reopened {period.started_at:%Y-%m-%d %H:%M} UTC*", ""]
        mark = " *(interrupted)*" if u.interrupted else ""
        mark += " *(replaced by a retry)*" if u.superseded else ""
        if u.role == "agent":
            # The agent writes Markdown: kept as-is, as its own block under the speaker line.
            lines += [f"**{_speaker(u.role)}** ({u.created_at:%H:%M:%S}){mark}:", "", u.text.strip() or " ", ""]
            continue
        body = "  \n".join(_md_escape(line) for line in u.text.splitlines()) or " "
        lines.append(f"**{_speaker(u.role)}** ({u.created_at:%H:%M:%S}): {body}{mark}")
        lines.append("")
    return "\n".join(lines)


TEXT_INDENT = "    "


@exporter("txt", "Text", "text/plain; charset=utf-8")
def as_text(detail: Detail) -> str:
    """One block per message: a header line (time, speaker, marks), then its text indented, every line of it, so a
    message of several lines (or one whose line looks like a header) still reads as one message; a blank line
    between messages."""
    c = detail.conversation
    lines = [c.title or "Conversation", f"Started {c.started_at:%Y-%m-%d %H:%M} UTC", ""]
    reopened = detail.reopened_before()
    for u in detail.utterances:
        if (period := reopened.get(u.seq)) is not None:
            lines += [f"Reopened {period.started_at:%Y-%m-%d %H:%M} UTC", ""]
        marks = [m for m, on in (("interrupted", u.interrupted), ("replaced by a retry", u.superseded)) if on]
        lines.append(f"[{u.created_at:%H:%M:%S}] {_speaker(u.role)}{''.join(f' [{m}]' for m in marks)}:")
        lines += [f"{TEXT_INDENT}{line}".rstrip() for line in u.text.splitlines() or [""]]
        lines.append("")
    return "\n".join(lines)
