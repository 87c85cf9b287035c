"""What the agent worker reports of one conversation's transcript, assembled from its session's events.

What is sent: the user's speech as interims (the whole turn so far) and, when the turn is committed, one final;
the agent's text as it is spoken as interims and each finished agent message as one final (marked interrupted
when cut off); typed messages (`lk.chat`) as finals. An interim and its final share an item id, so the page
updates one bubble in place and the app stores each utterance once. Each utterance is assembled by a
`TranscriptAssembler` (the same rules as the in-process agent); delivery, with its batching and retries, is the
`IngestClient`'s. On shutdown, `aclose(history=...)` adds a final for every message in the session history not
yet sent, so nothing said is missing, and drains the queue.

Typed text the browser also posted to the app carries its item id (`typed-<id>`) as the text stream's
`chatapp.item_id` attribute; `text_input_cb` notes it, and that message's final goes under the same id, so the
app stores it once.

The class knows nothing of rooms: feed it events (or `attach` it to an `AgentSession`) and it reports them.
Logs carry counts, never transcript text or the bearer token.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import httpx
from livekit.agents import AgentSession
from livekit.agents.voice import io, room_io
from livekit.agents.voice.events import ConversationItemAddedEvent, UserInputTranscribedEvent

from chatapp.conversations.assembler import TranscriptAssembler, clean
from chatapp.conversations.events import Role, utcnow
from chatapp.livekit.ingest_client import MAX_BATCH, IngestClient, WireEvent

log = logging.getLogger(__name__)

ITEM_ID_ATTRIBUTE = "chatapp.item_id"  # set by static/voice.js on typed text it also posted to the app
_TYPED_ID = re.compile(r"typed-[A-Za-z0-9-]{1,64}")  # what the app's /messages route stores
_DEFAULT_TEXT_INPUT = room_io.TextInputOptions().text_input_cb  # RoomIO's: interrupt, then answer the text


def _new_id(role: Role) -> str:
    return f"{role}-{uuid.uuid4().hex}"


class _SpokenText(io.TextOutput):
    """The agent's words as they are spoken (RoomIO passes them on, paced with the audio)."""

    def __init__(self, forwarder: TranscriptForwarder) -> None:
        super().__init__(label="chatapp-forwarder", next_in_chain=None)
        self._forwarder = forwarder

    async def capture_text(self, text: str) -> None:
        self._forwarder.on_agent_text(text)

    def flush(self) -> None:
        self._forwarder.on_agent_flush()


class TranscriptForwarder:
    """Turns one session's events into transcript events (one assembler per utterance in progress, one final per
    message) and hands them to its `IngestClient` to deliver."""

    def __init__(
        self,
        ingest_url: str,
        token: str,
        *,
        conversation_id: uuid.UUID | str = "",
        client: httpx.AsyncClient | None = None,
        batch_size: int = MAX_BATCH,
        initial_backoff: float = 0.2,
        max_backoff: float = 5.0,
        request_timeout: float = 10.0,
        retry_for: float = 120.0,
    ) -> None:
        self._cid = str(conversation_id)
        self._ingest = IngestClient(
            ingest_url,
            token,
            conversation_id=conversation_id,
            client=client,
            batch_size=batch_size,
            initial_backoff=initial_backoff,
            max_backoff=max_backoff,
            request_timeout=request_timeout,
            retry_for=retry_for,
        )
        self._user: TranscriptAssembler | None = None
        self._reply: TranscriptAssembler | None = None
        self._segment_open = False
        self._skip_segment = False
        self._item_ids: dict[str, str] = {}  # session message id -> the item id it was sent under
        self._finals: set[str] = set()
        self._ignored: set[str] = set()
        self._typed: deque[tuple[str, str]] = deque(maxlen=20)  # (text, item id) announced, not yet committed

    # ---- intake (synchronous: called from the session's event handlers) ----
    def attach(self, session: AgentSession[Any]) -> None:
        """Forward what `session` says and hears."""
        session.on("user_input_transcribed", self._on_transcribed)
        session.on("conversation_item_added", self._on_item_added)

    def text_output(self) -> io.TextOutput:
        """A text output receiving the agent's words: RoomIO's `TextOutputOptions(next_in_chain=...)` in a room,
        or `session.output.transcription` without one."""
        return _SpokenText(self)

    def ignore(self, item_ids: Iterable[str]) -> None:
        """Messages never to send, such as the earlier turns a continued conversation is seeded with."""
        self._ignored.update(item_ids)

    async def text_input_cb(self, session: AgentSession[Any], event: room_io.TextInputEvent) -> None:
        """RoomIO's `TextInputOptions(text_input_cb=...)`: note the item id the browser gave typed text, then
        let the session answer it as usual."""
        attributes = event.info.attributes if event.info is not None else {}
        self._safely(self.on_typed, event.text, (attributes or {}).get(ITEM_ID_ATTRIBUTE, ""))
        answered = _DEFAULT_TEXT_INPUT(session, event)
        if answered is not None:
            await answered

    def on_typed(self, text: str, item_id: str) -> None:
        """Typed text about to become a user message: send its final under `item_id` (if well formed)."""
        if _TYPED_ID.fullmatch(item_id) and text.strip():
            self._typed.append((text.strip(), item_id))

    def _typed_id(self, text: str) -> str | None:
        for index, (typed, item_id) in enumerate(self._typed):
            if typed == text:
                del self._typed[index]
                return item_id
        return None

    def _on_transcribed(self, event: UserInputTranscribedEvent) -> None:
        self._safely(self.on_user_transcribed, event.transcript, event.is_final)

    def _on_item_added(self, event: ConversationItemAddedEvent) -> None:
        self._safely(self.on_item_added, event.item)

    def _safely(self, handler: Any, *args: Any) -> None:
        try:
            handler(*args)
        except Exception:  # forwarding must never break the conversation itself
            log.exception("transcript forwarding failed for conversation %s", self._cid)

    def on_user_transcribed(self, transcript: str, is_final: bool) -> None:
        """Speech recognised so far in the user's current turn: reported as one growing interim."""
        if not transcript.strip():
            return
        turn = self._user = self._user or TranscriptAssembler(_new_id("user"))
        if (text := turn.hear(transcript, final=is_final)) is not None:
            self._ingest.put(WireEvent(turn.item_id, "user", text, final=False))

    def on_agent_text(self, delta: str) -> None:
        if self._skip_segment:  # the rest of a segment whose message was already final
            return
        self._segment_open = True
        reply = self._reply = self._reply or TranscriptAssembler(_new_id("agent"))
        if (text := reply.add(delta)) is not None:
            self._ingest.put(WireEvent(reply.item_id, "agent", text, final=False))

    def on_agent_flush(self) -> None:
        self._segment_open = False
        self._skip_segment = False

    def on_item_added(self, item: Any) -> None:
        """A message committed to the conversation: the final for the turn or reply in progress, or (typed
        text, a message with no interims) a final of its own."""
        role = _role(item)
        if role is None or item.id in self._ignored:
            return
        text = (item.text_content or "").strip()
        if role == "user" and (typed_id := self._typed_id(text)) is not None:
            self._item_ids[item.id] = typed_id  # typed text, not the speech turn that may be in progress
            self._final(typed_id, role, text, False, _created(item))
            return
        if role == "user":
            current, self._user = self._user, None
            interrupted = False
        else:
            current, self._reply = self._reply, None
            if self._segment_open:
                self._skip_segment = True
            interrupted = bool(item.interrupted)
        item_id = current.item_id if current else f"{role}-{item.id}"
        self._item_ids[item.id] = item_id
        self._final(item_id, role, (current.finish(text) if current else text) or "", interrupted, _created(item))

    def reconcile(self, items: Iterable[Any]) -> int:
        """Queue a final for every message in `items` (the session history) not sent yet, and for what was
        still being said; returns how many were missing."""
        missing = 0
        for item in items:
            role = _role(item)
            if role is None or item.id in self._ignored:
                continue
            item_id = self._item_ids.get(item.id, f"{role}-{item.id}")
            text = (item.text_content or "").strip()
            if item_id not in self._finals and text:
                self._item_ids[item.id] = item_id
                self._final(item_id, role, text, bool(getattr(item, "interrupted", False)), _created(item))
                missing += 1
        still_open: list[tuple[TranscriptAssembler | None, Role]] = [(self._user, "user"), (self._reply, "agent")]
        for current, role in still_open:
            if current is not None and current.item_id not in self._finals and (said := current.finish()):
                self._final(current.item_id, role, said, True, utcnow())  # cut off: what was shown so far
                missing += 1
        self._user = self._reply = None
        return missing

    def _final(self, item_id: str, role: Role, text: str, interrupted: bool, at: datetime) -> None:
        """Queue the one final of `item_id` (a retry of it, or one with no text, is not sent)."""
        text = clean(text)
        if item_id in self._finals or not text:
            return
        self._finals.add(item_id)
        self._ingest.put(WireEvent(item_id, role, text, final=True, interrupted=interrupted, timestamp=at))

    # ---- delivery (the ingest client's) ----
    @property
    def pending(self) -> int:
        return self._ingest.pending

    @property
    def delivered(self) -> int:
        return self._ingest.delivered

    @property
    def dropped(self) -> int:
        return self._ingest.dropped

    @property
    def attempts(self) -> int:
        return self._ingest.attempts

    def start(self) -> None:
        """Start delivering (needs a running event loop); events reported before are sent first."""
        self._ingest.start()

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything reported so far is acknowledged or dropped; False on timeout."""
        return await self._ingest.flush(timeout)

    async def aclose(self, *, history: Iterable[Any] = (), timeout: float = 30.0) -> bool:
        """Reconcile from `history`, deliver what is queued (up to `timeout`), then stop. True if all arrived."""
        if self._ingest.closed:
            return not self._ingest.pending
        missing = self.reconcile(history)
        if missing:
            log.info("reconciliation queued %d missing final(s) for conversation %s", missing, self._cid)
        return await self._ingest.aclose(timeout)


def _role(item: Any) -> Role | None:
    if getattr(item, "type", None) != "message":
        return None
    return {"user": "user", "assistant": "agent"}.get(getattr(item, "role", ""))  # type: ignore[return-value]


def _created(item: Any) -> datetime:
    created = getattr(item, "created_at", None)
    return datetime.fromtimestamp(created, UTC) if isinstance(created, int | float) else utcnow()
