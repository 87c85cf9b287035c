"""The original design's JSON API, kept for non-browser clients: save, list and read conversations.

Authenticated by the login session cookie; as a state-changing call, save also needs the `x-csrftoken`
header (the value of the `csrftoken` cookie).
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, get, post
from litestar.exceptions import HTTPException, NotFoundException
from litestar.params import Body, Parameter

from chatapp.accounts.service import User
from chatapp.conversations import queries
from chatapp.conversations.events import MAX_TEXT_LENGTH, TranscriptEvent
from chatapp.conversations.http import SERVICE, answered_as, conversation_gone
from chatapp.conversations.service import ConversationGone, ConversationService
from chatapp.core.openapi import NOT_BLANK, errors
from chatapp.core.validation import as_utc, checked_text
from chatapp.history.service import BadCursor, api_page, conversation_detail

log = logging.getLogger(__name__)

MAX_MESSAGES = 1000
CLIENT_ID = re.compile(r"^[\w.:\-]{1,128}$")
# Milliseconds since the epoch that are still a time in years 1 to 9999.
MIN_MILLISECONDS, MAX_MILLISECONDS = -62_135_596_800_000, 253_402_300_799_999

# The save body as the schema shows it. The handler reads it as a plain object and checks it itself
# (parse_conversation_id, parse_messages) for the statuses and messages API clients already rely on; this says the
# same: a UUID session_id, at most MAX_MESSAGES entries (413 beyond), each with a role and a non-blank text of
# at most MAX_TEXT_LENGTH characters without control characters. Unknown fields are ignored.
SAVE_MESSAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["role", "text"],
    "properties": {
        "role": {"enum": ["user", "agent"]},
        "text": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_TEXT_LENGTH,
            "pattern": NOT_BLANK,
            "description": "Not only whitespace; no control characters other than tab and newlines.",
        },
        "id": {
            "type": ["string", "null"],
            "pattern": CLIENT_ID.pattern,
            "description": "The client's id for this entry; with it a retried save adds nothing twice.",
        },
        "timestamp": {
            "oneOf": [
                {"type": "number", "minimum": MIN_MILLISECONDS, "maximum": MAX_MILLISECONDS},
                {"type": "string", "format": "date-time"},
                {"type": "null"},
            ],
            "description": "Milliseconds since the epoch, or an ISO 8601 time (UTC when it names no offset).",
        },
    },
}
SAVE_REQUEST_SCHEMA: dict[str, Any] = {
    "title": "SaveRequest",
    "required": ["session_id"],
    "properties": {
        "session_id": {"type": "string", "format": "uuid"},
        "messages": {
            "type": ["array", "null"],
            "maxItems": MAX_MESSAGES,
            "items": SAVE_MESSAGE_SCHEMA,
            "description": "The client's copy of the transcript: entries the server lacks are added before saving.",
        },
    },
}


class ConversationSummary(msgspec.Struct):
    id: uuid.UUID
    title: str | None
    started_at: datetime
    ended_at: datetime | None
    message_count: int
    archived: bool
    pinned: bool


class SaveResult(ConversationSummary):
    saved: bool


class UtteranceOut(msgspec.Struct):
    seq: int
    id: str
    role: str
    text: str
    interrupted: bool
    created_at: datetime


class PeriodOut(msgspec.Struct):
    """One time the conversation was active: the first (n 0), then each reopening; its messages from first_seq."""

    n: int
    started_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    first_seq: int


class ConversationDetail(ConversationSummary):
    active: bool
    utterances: list[UtteranceOut]
    periods: list[PeriodOut] = []


class ConversationList(msgspec.Struct):
    items: list[ConversationSummary]
    next_cursor: str | None


def _flag(raw: str | None) -> bool | None:
    return None if raw is None else raw == "true"


def _bad(status: int, detail: str) -> HTTPException:
    return HTTPException(status_code=status, detail=detail)


def parse_conversation_id(data: dict[str, Any]) -> uuid.UUID:
    raw = data.get("session_id")
    if raw in (None, ""):
        raise _bad(400, "session_id is required.")
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        raise _bad(400, "session_id must be a UUID.") from None


def _timestamp(raw: object, index: int) -> datetime | None:
    """Milliseconds since the epoch (the original client's format) or an ISO 8601 string."""
    if raw is None:
        return None
    try:
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return datetime.fromtimestamp(raw / 1000, tz=UTC)
        if isinstance(raw, str):
            return as_utc(datetime.fromisoformat(raw))
    except (ValueError, OverflowError, OSError):
        pass
    raise _bad(422, f"messages[{index}].timestamp must be milliseconds since the epoch or an ISO 8601 time.")


def parse_messages(conversation_id: uuid.UUID, raw: object) -> list[TranscriptEvent]:
    """Validate the client's copy of the transcript. The client's clock may be off by minutes, so its times are
    checked but not kept: what the server lacks is placed by order, and timed from its neighbours there
    (conversations.client_copy)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _bad(422, "messages must be a list.")
    if len(raw) > MAX_MESSAGES:
        raise _bad(413, f"At most {MAX_MESSAGES:,} messages can be saved at once.")
    events: list[TranscriptEvent] = []
    for index, message in enumerate(raw):
        if not isinstance(message, dict):
            raise _bad(422, f"messages[{index}] must be an object.")
        role, text, client_id = message.get("role"), message.get("text"), message.get("id")
        if role not in ("user", "agent"):
            raise _bad(422, f"messages[{index}].role must be 'user' or 'agent'.")
        if not isinstance(text, str) or not text.strip():
            raise _bad(422, f"messages[{index}].text must be a non-empty string.")
        if len(text) > MAX_TEXT_LENGTH:
            raise _bad(422, f"messages[{index}].text is longer than {MAX_TEXT_LENGTH:,} characters.")
        checked_text(text, f"messages[{index}].text")
        if client_id is not None and not (isinstance(client_id, str) and CLIENT_ID.match(client_id)):
            raise _bad(422, f"messages[{index}].id must be 1-128 letters, digits or . : _ -")
        _timestamp(message.get("timestamp"), index)  # a bad one is still a 422
        # Without an id, the entry's content and position name it (two identical "yes" entries stay two).
        fingerprint = f"{role}\0{text}\0{index}"
        item_id = client_id or "client-" + hashlib.sha256(fingerprint.encode()).hexdigest()[:32]
        events.append(TranscriptEvent(conversation_id, item_id, role, text, final=True, timestamp=datetime.now(UTC)))
    return events


def summary(conversation: queries.Conversation) -> dict[str, Any]:
    return {
        "id": conversation.id,
        "title": conversation.title,
        "started_at": conversation.started_at,
        "ended_at": conversation.ended_at,
        "message_count": conversation.message_count,
        "archived": conversation.archived,
        "pinned": conversation.pinned,
    }


class ConversationsApiController(Controller):
    """The JSON API over saved conversations. Its URL and field names (`/api/users/sessions`, `session_id`) are
    the published API's first names and stay, so existing clients keep working."""

    path = "/api/users/sessions"
    tags = ["conversations"]
    dependencies = SERVICE
    exception_handlers = {ConversationGone: conversation_gone, BadCursor: answered_as(400, "Invalid cursor.")}

    @post(
        "/save",
        status_code=200,
        summary="Save (end) a conversation from the server's transcript",
        security=[{"sessionCookie": [], "csrf": []}],
        responses=errors(400, 401, 403, 404, 413, 415, 422, 503),
    )
    async def save(
        self,
        request: Request[User, Any, Any],
        conversations: ConversationService,
        data: Annotated[dict[str, Any], Body(schema_extra=SAVE_REQUEST_SCHEMA)],
    ) -> SaveResult:
        session_id = parse_conversation_id(data)
        events = parse_messages(session_id, data.get("messages"))
        saved = await conversations.save_client_copy(request.user.id, session_id, events)
        return SaveResult(**summary(saved.conversation), saved=saved.saved)

    @get("/", summary="The user's saved conversations, newest first", responses=errors(400, 401, 503))
    async def list_conversations(
        self,
        request: Request[User, Any, Any],
        cursor: Annotated[
            str | None, Parameter(description="Opaque: the previous page's `next_cursor`; any other value is a 400.")
        ] = None,
        limit: Annotated[int, Parameter(ge=1, le=100)] = 20,
        # Spelled out: Litestar would also take "null", "1" or "yes" for a bool, which the schema does not allow.
        archived: Annotated[
            Literal["true", "false"] | None, Parameter(description="Only archived (true) or only other (false) ones")
        ] = None,
        pinned: Annotated[
            Literal["true", "false"] | None, Parameter(description="Only pinned (true) or only unpinned (false) ones")
        ] = None,
    ) -> ConversationList:
        """Every saved conversation by default, archived and pinned ones included (as before those existed), in
        start order: a sync client sees no reordering when someone pins. Use the same filters on every page."""
        page = await api_page(request.user.id, cursor, limit, _flag(archived), _flag(pinned))
        items = [
            ConversationSummary(i.id, i.title, i.started_at, i.ended_at, i.message_count, i.archived, i.pinned)
            for i in page.items
        ]
        return ConversationList(items=items, next_cursor=page.next_cursor)

    @get("/{session_id:uuid}", summary="One conversation with its utterances", responses=errors(400, 401, 404, 503))
    async def detail(self, request: Request[User, Any, Any], session_id: uuid.UUID) -> ConversationDetail:
        detail = await conversation_detail(request.user.id, session_id)
        if detail is None:
            raise NotFoundException(detail="Session not found.")
        return ConversationDetail(
            **summary(detail.conversation),
            active=detail.conversation.active,
            utterances=[
                UtteranceOut(u.seq, u.item_id, u.role, u.text, u.interrupted, u.created_at) for u in detail.utterances
            ],
            periods=[PeriodOut(p.n, p.started_at, p.ended_at, p.end_reason, p.after_seq + 1) for p in detail.periods],
        )
