"""Chat page, typed and dictated text, the SSE stream, and the ingest API for out-of-process agents."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from jinja2_fragments.litestar import HTMXBlockTemplate
from litestar import Controller, Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import CacheControlHeader, State
from litestar.enums import RequestEncodingType
from litestar.exceptions import HTTPException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import Body, Parameter
from litestar.plugins.htmx import HTMXRequest
from litestar.response import Redirect, Template

from chatapp.accounts.limits import limit
from chatapp.accounts.service import User
from chatapp.accounts.sessions import session_tag
from chatapp.accounts.web import BearerTokenRequired, toast_header
from chatapp.conversations.agent_access import valid_ingest_token
from chatapp.conversations.events import MAX_ITEM_ID_LENGTH, MAX_TEXT_LENGTH, TranscriptEvent, utcnow
from chatapp.conversations.http import CHAT_ERRORS, SERVICE, answered_as, conversation_gone
from chatapp.conversations.live_events import Recent
from chatapp.conversations.live_response import EventStream
from chatapp.conversations.service import ChatView, ConversationGone, ConversationService, IngestClosed
from chatapp.conversations.speech import MAX_AUDIO_BYTES, MAX_SECONDS
from chatapp.core.openapi import NO_CONTROL_CHARACTERS, errors
from chatapp.core.validation import FORM_ONLY, StrictJson, checked_text, checked_timestamp

ItemId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ITEM_ID_LENGTH, pattern=r"^[\w.:\-]+$")]
# Documented, not enforced by msgspec: the handlers check length and control characters themselves, so a
# too-long or bad text is a 422 naming the field (the worker's forwarder splits a 422 batch; a 400 it drops).
Text = Annotated[
    str,
    msgspec.Meta(extra_json_schema={"extra": {"max_length": MAX_TEXT_LENGTH, "pattern": NO_CONTROL_CHARACTERS}}),
]
DICTATION_PREFIX = "dictation-"
# The stored id is the prefix plus the client's id, and must fit the column.
DictationItemId = Annotated[
    str, msgspec.Meta(min_length=1, max_length=MAX_ITEM_ID_LENGTH - len(DICTATION_PREFIX), pattern=r"^[\w.:\-]+$")
]
MAX_SEQ = 2**31 - 1  # utterance.seq is an int4


class IngestEvent(msgspec.Struct, forbid_unknown_fields=True):
    """One transcript event from an agent worker."""

    item_id: ItemId
    role: Literal["user", "agent"]
    text: Text
    final: bool
    interrupted: bool = False
    timestamp: datetime | None = None


class IngestBatch(msgspec.Struct, forbid_unknown_fields=True):
    events: Annotated[list[IngestEvent], msgspec.Meta(min_length=1, max_length=100)]


class IngestResponse(msgspec.Struct):
    stored: int
    ignored: int


class DictatedText(msgspec.Struct):
    text: str


async def audio_body(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """A recording comes as the raw body with its own audio type (MediaRecorder's, or a WAV...), else 415."""
    media_type = connection.headers.get("content-type", "").partition(";")[0].strip().lower()
    if not (media_type.startswith(("audio/", "video/")) or media_type == "application/octet-stream"):
        raise HTTPException(status_code=415, detail="Send the recording as audio (for example audio/webm).")


class DictationForm(msgspec.Struct):
    item_id: DictationItemId
    text: Text
    final: bool = False


def chat_context(view: ChatView, user: User, state: State) -> dict[str, Any]:
    return {
        "user": user,
        "conversation": view.conversation,
        "conversation_id": view.conversation.id,
        "messages": view.messages,
        "last_seq": view.last_seq,
        "agent_state": view.agent_state,
        "agent_detail": view.agent_detail,
        "start": view.start,
        # With LiveKit the worker's own settings pick its model; the app cannot tell, so it does not claim.
        "offline_model": not state.settings.llm_configured and not state.settings.livekit_configured,
        "recent": view.recent,
        # The active conversation tops the sidebar from its first message on (marked current).
        "current": Recent(view.conversation.id, view.header_title) if view.header_title else None,
        "header_title": view.header_title,
        "origin": view.origin,
        "server_dictation": state.settings.stt_configured,
        "dictation_max_seconds": MAX_SECONDS,
    }


def chat_blocks(context: dict[str, Any], *more_blocks: str) -> Template:
    """What an htmx request gets of the chat page: the panel, and the sidebar (and `more_blocks`) out of band."""
    return HTMXBlockTemplate(
        template_name="chat.html",
        block_names=["chat_panel", "history_list", *more_blocks],
        context=context | {"oob": True},
    )


async def chat_response(request: HTMXRequest, state: State, conversations: ConversationService) -> Template:
    """The chat page (or, for htmx, its panel and sidebar) of the user's active conversation."""
    user: User = request.user
    context = chat_context(await conversations.open(user.id, user.display_name), user, state)
    return chat_blocks(context) if request.htmx else Template("chat.html", context=context)


def in_place(template: Template, push_url: str | None = None, replace_url: str | None = None) -> Template:
    """The swapped panel's address: a reopened conversation's is pushed (Back returns), New Chat's replaces it."""
    if push_url:
        template.headers["HX-Push-Url"] = push_url
    if replace_url:
        template.headers["HX-Replace-Url"] = replace_url
    return template


def _optional_uuid(raw: object) -> uuid.UUID | None:
    if raw in (None, ""):
        return None
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        raise HTTPException(status_code=400, detail="conversation_id must be a UUID.") from None


def _clean_text(raw: object) -> str:
    text = checked_text(raw, "The message").strip() if isinstance(raw, str) else ""
    if not text:
        raise HTTPException(status_code=422, detail="Type a message first.")
    if len(text) > MAX_TEXT_LENGTH:
        raise HTTPException(status_code=413, detail=f"Messages can be at most {MAX_TEXT_LENGTH:,} characters.")
    return text


def _seq(raw: object) -> int:
    if not (isinstance(raw, str) and raw.isascii() and raw.isdigit() and 0 < int(raw) <= MAX_SEQ):
        raise HTTPException(status_code=400, detail="seq must be a message sequence number.")
    return int(raw)


def _item_id(raw: object) -> str:
    """The client's id for this message makes a retried post idempotent; without JS the server makes one."""
    if isinstance(raw, str) and raw:
        if len(raw) > 64 or not all(c.isalnum() or c == "-" for c in raw):
            raise HTTPException(status_code=400, detail="Invalid message id.")
        return f"typed-{raw}"
    return f"typed-{uuid.uuid4()}"


class ChatController(Controller):
    include_in_schema = False  # HTML pages and htmx fragments: not an API (see chatapp.core.openapi)
    # Private pages: Back after logging out must ask the server again, not show them from the cache.
    cache_control = CacheControlHeader(no_store=True)
    dependencies = SERVICE
    exception_handlers = CHAT_ERRORS

    @get("/", name="chat")
    async def chat_page(self, request: HTMXRequest, state: State, conversations: ConversationService) -> Template:
        return await chat_response(request, state, conversations)

    @get("/chat/{conversation_id:uuid}", name="chat_conversation")
    async def conversation_page(
        self, request: HTMXRequest, state: State, conversations: ConversationService, conversation_id: uuid.UUID
    ) -> Template | Redirect:
        """The chat page's address for the active conversation; a saved one's is its read-only page (with
        "Continue here"), where a reload of an old address lands."""
        user: User = request.user
        if not await conversations.is_active(user.id, conversation_id):
            return Redirect(f"/history/{conversation_id}", status_code=303)
        return await chat_response(request, state, conversations)

    @post("/conversations/{conversation_id:uuid}/reopen", status_code=200, guards=[*FORM_ONLY, limit("new_chat")])
    async def reopen(
        self, request: HTMXRequest, state: State, conversations: ConversationService, conversation_id: uuid.UUID
    ) -> Template | Redirect:
        """Open a saved conversation in the chat panel to continue it in place (the active one is ended first,
        as New Chat ends it). Counted with New Chat: it starts an agent."""
        user: User = request.user
        result = await conversations.reopen(user.id, conversation_id, user.display_name)
        if not request.htmx:
            return Redirect(f"/chat/{conversation_id}", status_code=303)
        assert result.outcome.current is not None
        view = await conversations.view_with_transcript(result.outcome.current, result.start)
        return in_place(chat_blocks(chat_context(view, user, state)), push_url=f"/chat/{conversation_id}")

    @post("/conversations/new", status_code=200, guards=[*FORM_ONLY, limit("new_chat")])
    async def new_chat(
        self,
        request: HTMXRequest,
        state: State,
        conversations: ConversationService,
        data: Annotated[dict[str, Any], Body(media_type=RequestEncodingType.URL_ENCODED)],
    ) -> Template | Redirect:
        """Save the active conversation from the server's own buffer, stop its agent, start the next one."""
        user: User = request.user
        expected = _optional_uuid(data.get("conversation_id"))
        result = await conversations.press_new_chat(user.id, user.display_name, expected)
        if not request.htmx:
            return Redirect("/", status_code=303)
        assert result.outcome.current is not None
        view = await conversations.view(result.outcome.current, result.start, recent=result.recent)
        # One quiet line under the button says what happened (no toast over the transcript).
        context = chat_context(view, user, state) | {"new_chat_saved": result.saved}
        return in_place(chat_blocks(context, "new_chat_status"), replace_url="/")

    @post("/conversations/{conversation_id:uuid}/messages", status_code=200, guards=[*FORM_ONLY, limit("messages")])
    async def send_message(
        self,
        request: HTMXRequest,
        conversations: ConversationService,
        conversation_id: uuid.UUID,
        data: Annotated[dict[str, Any], Body(media_type=RequestEncodingType.URL_ENCODED)],
    ) -> Response[None] | Redirect:
        user: User = request.user
        text = _clean_text(data.get("text"))
        await conversations.send_text(user.id, conversation_id, text, _item_id(data.get("item_id")))
        if request.htmx:
            return Response(None, status_code=204)
        return Redirect("/", status_code=303)

    @post("/conversations/{conversation_id:uuid}/stop", status_code=204, guards=[*FORM_ONLY, limit("messages")])
    async def stop_reply(
        self, request: Request[User, Any, Any], conversations: ConversationService, conversation_id: uuid.UUID
    ) -> Response[None]:
        """The Stop button (or Esc in the composer): the agent's reply ends here, kept as interrupted.
        Counted with typed messages; 204 also when there was nothing left to stop (the reply just ended)."""
        await conversations.interrupt(request.user.id, conversation_id)
        return Response(None, status_code=204)

    @post("/conversations/{conversation_id:uuid}/retry", status_code=204, guards=[*FORM_ONLY, limit("new_chat")])
    async def retry_reply(
        self,
        request: Request[User, Any, Any],
        conversations: ConversationService,
        conversation_id: uuid.UUID,
        data: Annotated[dict[str, Any], Body(media_type=RequestEncodingType.URL_ENCODED)],
    ) -> Response[None]:
        """Retry on the agent's last reply (`seq`): kept as superseded, answered anew. Counted with New Chat (it
        starts an agent)."""
        await conversations.retry(request.user.id, conversation_id, _seq(data.get("seq")))
        return Response(None, status_code=204)

    @post("/conversations/{conversation_id:uuid}/dictation", status_code=200, guards=[limit("dictation")])
    async def dictation(
        self,
        request: Request[User, Any, Any],
        conversations: ConversationService,
        conversation_id: uuid.UUID,
        data: DictationForm,
    ) -> Response[None]:
        text = checked_text(data.text, "text", MAX_TEXT_LENGTH).strip()
        if text:
            await conversations.dictate(
                request.user.id, conversation_id, DICTATION_PREFIX + data.item_id, text, data.final
            )
        return Response(None, status_code=204)

    @post(
        "/conversations/{conversation_id:uuid}/dictation/audio",
        status_code=200,
        guards=[audio_body, limit("dictation")],
        request_max_body_size=MAX_AUDIO_BYTES,  # its own cap: the app's 1 MiB holds under a minute of WAV
    )
    async def dictation_audio(
        self,
        request: Request[User, Any, Any],
        conversations: ConversationService,
        conversation_id: uuid.UUID,
        item_id: DictationItemId,
    ) -> DictatedText:
        """Server dictation: the recording is transcribed and stored as the user's message (once per item_id)."""
        audio = await request.body()
        text = await conversations.dictate_audio(request.user.id, conversation_id, DICTATION_PREFIX + item_id, audio)
        return DictatedText(text=text)

    @post("/conversations/{conversation_id:uuid}/agent", status_code=200, guards=[limit("new_chat")])
    async def retry_agent(
        self, request: Request[User, Any, Any], conversations: ConversationService, conversation_id: uuid.UUID
    ) -> Response[None]:
        """The Retry control shown when the agent could not be started."""
        user: User = request.user
        conversation = await conversations.owned_active(user.id, conversation_id)
        if await conversations.ensure_agent(conversation, user.display_name) is None:
            return Response(None, status_code=503, headers=toast_header("The agent still cannot be started.", "error"))
        return Response(None, status_code=204, headers=toast_header("Agent started.", "success"))

    @get("/conversations/{conversation_id:uuid}/stream")
    async def stream(
        self,
        request: Request[User, Any, Any],
        state: State,
        conversations: ConversationService,
        conversation_id: uuid.UUID,
        after: Annotated[int, Parameter(ge=0, le=MAX_SEQ)] = 0,
    ) -> EventStream:
        user: User = request.user
        cursor = max(after, _last_event_id(request.headers.get("last-event-id", "")))
        slot = await conversations.admit_stream(user.id, conversation_id)
        return conversations.live_events(slot, conversation_id, user.id, cursor, state.fragments, session_tag(request))


def _last_event_id(header: str) -> int:
    """EventSource only ever sends back an id we gave it (a seq), so anything else is a broken client: 400."""
    if not header:
        return 0
    if not (header.isascii() and header.isdigit()) or int(header) > MAX_SEQ:
        raise HTTPException(status_code=400, detail="Last-Event-ID must be a message sequence number.")
    return int(header)


def _period(connection: ASGIConnection[Any, Any, Any, Any]) -> int:
    """The active period an agent reports for (`?period=n`; none: the first), or 400."""
    raw = connection.query_params.get("period", "0")
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9):
        raise HTTPException(status_code=400, detail="period must be a number.")
    return int(raw)


async def ingest_token_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """The agent worker's bearer token for this conversation, from the header alone, or 401.

    `async` although it never awaits: Litestar runs a plain function guard in its thread pool, and that hand-off
    was a third of an ingest POST's profile (`python -m bench live`; the README's "Where the time goes").
    """
    conversation_id = connection.path_params["conversation_id"]
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    secret_key = connection.app.state.settings.secret_key
    if scheme.lower() != "bearer" or not valid_ingest_token(secret_key, conversation_id, token, _period(connection)):
        raise BearerTokenRequired(detail="A valid bearer token for this conversation is required.")


class IngestController(Controller):
    path = "/api/conversations"
    tags = ["agent ingest"]
    dependencies = SERVICE
    exception_handlers = {
        ConversationGone: conversation_gone,
        IngestClosed: answered_as(410, "This conversation ended too long ago."),
    }

    @post(
        "/{conversation_id:uuid}/events",
        status_code=200,
        summary="Report transcript events from an agent worker",
        description=(
            "A batch of 1 to 100 transcript events for one conversation, authenticated with the conversation's "
            "bearer token (handed to the agent at dispatch). Finals are stored idempotently by item_id; a "
            "repeated delivery is acknowledged and ignored. Finals for an ended conversation are still stored."
        ),
        request_max_body_size=8 * 1024 * 1024,
        guards=[ingest_token_guard],  # before the body (up to 8 MiB) is read and decoded
        dto=StrictJson[IngestBatch],  # decoded once, strictly, straight from the bytes
        return_dto=None,
        security=[{"ingestToken": []}],
        responses=errors(400, 401, 404, 410, 413, 415, 422, 503),
    )
    async def ingest(
        self,
        request: Request[Any, Any, Any],
        conversations: ConversationService,
        conversation_id: uuid.UUID,
        data: IngestBatch,
    ) -> IngestResponse:
        events = transcript_events(conversation_id, data)
        result = await conversations.ingest(conversation_id, events, _period(request))
        return IngestResponse(stored=result.stored, ignored=result.ignored)


def transcript_events(conversation_id: uuid.UUID, batch: IngestBatch) -> list[TranscriptEvent]:
    """The batch as the pipeline's events: text and times checked (a 422 names the event), a missing time now."""
    return [
        TranscriptEvent(
            conversation_id=conversation_id,
            item_id=e.item_id,
            role=e.role,
            text=checked_text(e.text, f"events[{n}].text", MAX_TEXT_LENGTH),
            final=e.final,
            interrupted=e.interrupted,
            timestamp=utcnow() if e.timestamp is None else checked_timestamp(e.timestamp, f"events[{n}].timestamp"),
        )
        for n, e in enumerate(batch.events)
    ]
