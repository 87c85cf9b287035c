"""The agent worker's delivery of one conversation's transcript to the app's ingest endpoint.

What is sent: the user's speech as interims (the whole turn so far) and, when the turn is committed, one final;
the agent's text as it is spoken as interims and each finished agent message as one final (marked interrupted
when cut off); typed messages (`lk.chat`) as finals. An interim and its final share an item id, so the page
updates one bubble in place and the app stores each utterance once.

How: one ordered queue, sent in batches of at most 100 by one task. Nothing can hold the queue for long:
- 408, 429, 5xx and network errors are retried with exponential backoff for up to `retry_for` seconds (2 min)
  per batch; then that batch is dropped (an error with the counts) and the next one goes.
- 404 and 410: the conversation is gone (or past its late-final window): this and every later event dropped.
- 401 and 403: the app rejected the bearer token: the conversation's events are dropped, logged once as an error.
- 422: the app refused the batch's content: it is split and sent event by event, so only the bad event is
  dropped (logged with its item id), not the good ones around it.
- any other 4xx is a bug on our side (logged, dropped).
Retries can deliver a batch twice; the app ignores a final whose item id it already has. Interims superseded
by a later event for the same item are dropped before sending. On shutdown, `aclose(history=...)` adds a final
for every message in the session history not yet sent, so nothing said is missing, and drains the queue.

Typed text the browser also posted to the app carries its item id (`typed-<id>`) as the text stream's
`chatapp.item_id` attribute; `text_input_cb` notes it, and that message's final goes under the same id, so the
app stores it once.

The class knows nothing of rooms: feed it events (or `attach` it to an `AgentSession`) and it delivers them.
Logs carry counts and statuses, never transcript text or the bearer token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
from livekit.agents import AgentSession
from livekit.agents.voice import io, room_io
from livekit.agents.voice.events import ConversationItemAddedEvent, UserInputTranscribedEvent

from chatapp.conversations.events import MAX_TEXT_LENGTH, utcnow

log = logging.getLogger(__name__)

Role = Literal["user", "agent"]
MAX_BATCH = 100  # the ingest endpoint's limit
_RETRYABLE = {408, 429}
_GONE = {404, 410}
_TOKEN_REJECTED = {401, 403}
ITEM_ID_ATTRIBUTE = "chatapp.item_id"  # set by static/voice.js on typed text it also posted to the app
_TYPED_ID = re.compile(r"typed-[A-Za-z0-9-]{1,64}")  # what the app's /messages route stores
_DEFAULT_TEXT_INPUT = room_io.TextInputOptions().text_input_cb  # RoomIO's: interrupt, then answer the text


@dataclass(frozen=True, slots=True)
class WireEvent:
    """One transcript event as the ingest endpoint takes it."""

    item_id: str
    role: Role
    text: str
    final: bool
    interrupted: bool = False
    timestamp: datetime = field(default_factory=utcnow)

    def to_json(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "role": self.role,
            "text": self.text,
            "final": self.final,
            "interrupted": self.interrupted,
            "timestamp": self.timestamp.isoformat(),
        }


@dataclass
class _Open:
    """A user turn or an agent reply still being said: its item id and the text reported so far."""

    item_id: str
    finals: list[str] = field(default_factory=list)  # user: committed STT segments of this turn
    text: str = ""  # user: the current interim segment; agent: everything spoken so far
    reported: str = ""


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
        self._url = ingest_url
        self._headers = {"Authorization": f"Bearer {token}"}
        self._cid = str(conversation_id)
        self._client = client
        self._owns_client = client is None
        self._batch_size = max(1, min(batch_size, MAX_BATCH))
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._request_timeout = request_timeout
        self._retry_for = retry_for
        self._queue: deque[WireEvent] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._sender: asyncio.Task[None] | None = None
        self._closing = False
        self._gone = False
        self._user: _Open | None = None
        self._reply: _Open | None = None
        self._segment_open = False
        self._skip_segment = False
        self._item_ids: dict[str, str] = {}  # session message id -> the item id it was sent under
        self._finals: set[str] = set()
        self._ignored: set[str] = set()
        self._typed: deque[tuple[str, str]] = deque(maxlen=20)  # (text, item id) announced, not yet committed
        self.delivered = 0
        self.dropped = 0
        self.attempts = 0

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
        text = transcript.strip()
        if not text:
            return
        turn = self._user = self._user or _Open(_new_id("user"))
        if is_final:
            turn.finals.append(text)
            turn.text = ""
        else:
            turn.text = text
        whole = " ".join([*turn.finals, turn.text]).strip()[:MAX_TEXT_LENGTH]
        if whole != turn.reported:
            turn.reported = whole
            self._put(WireEvent(turn.item_id, "user", whole, final=False))

    def on_agent_text(self, delta: str) -> None:
        if self._skip_segment:  # the rest of a segment whose message was already final
            return
        self._segment_open = True
        reply = self._reply = self._reply or _Open(_new_id("agent"))
        reply.text += delta
        text = reply.text.strip()[:MAX_TEXT_LENGTH]
        if text and text != reply.reported:
            reply.reported = text
            self._put(WireEvent(reply.item_id, "agent", text, final=False))

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
        self._final(item_id, role, text or (current.reported if current else ""), interrupted, _created(item))

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
        for current, role in ((self._user, "user"), (self._reply, "agent")):
            if current is not None and current.reported and current.item_id not in self._finals:
                self._final(current.item_id, role, current.reported, True, utcnow())  # type: ignore[arg-type]
                missing += 1
        self._user = self._reply = None
        return missing

    def _final(self, item_id: str, role: Role, text: str, interrupted: bool, at: datetime) -> None:
        if item_id in self._finals or not text:
            return
        self._finals.add(item_id)
        self._put(WireEvent(item_id, role, text[:MAX_TEXT_LENGTH], final=True, interrupted=interrupted, timestamp=at))

    def _put(self, event: WireEvent) -> None:
        if self._gone:
            self.dropped += 1
            return
        last = self._queue[-1] if self._queue else None
        if last is not None and not last.final and not event.final and last.item_id == event.item_id:
            self._queue[-1] = event  # a newer interim of the same utterance replaces the one still waiting
        else:
            self._queue.append(event)
        self._idle.clear()
        self._wake.set()

    # ---- delivery ----
    @property
    def pending(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        if self._sender is None:
            if self._client is None:
                self._client = httpx.AsyncClient(timeout=self._request_timeout)
            self._sender = asyncio.create_task(self._send_forever(), name=f"ingest-{self._cid}")

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is acknowledged or dropped; False on timeout."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def aclose(self, *, history: Iterable[Any] = (), timeout: float = 30.0) -> bool:
        """Reconcile from `history`, deliver what is queued (up to `timeout`), then stop. True if all arrived."""
        if self._closing:
            return not self._queue
        missing = self.reconcile(history)
        if missing:
            log.info("reconciliation queued %d missing final(s) for conversation %s", missing, self._cid)
        self.start()
        delivered = await self.flush(timeout)
        if not delivered:
            log.error(
                "%d transcript event(s) for conversation %s could not be delivered before shutdown",
                len(self._queue),
                self._cid,
            )
        self._closing = True
        self._wake.set()
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        if self._owns_client and self._client is not None:
            await self._client.aclose()
        return delivered

    async def _send_forever(self) -> None:
        while not self._closing:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._take_batch()
            await self._deliver(batch)

    def _take_batch(self) -> list[WireEvent]:
        """The oldest events, without interims that a later queued event for the same item supersedes."""
        last = {event.item_id: index for index, event in enumerate(self._queue)}
        kept = [e for i, e in enumerate(self._queue) if e.final or last[e.item_id] == i]
        batch, rest = kept[: self._batch_size], kept[self._batch_size :]
        self._queue = deque(rest)
        return batch

    async def _deliver(self, batch: list[WireEvent]) -> None:
        """Send one batch until acknowledged, refused, or out of retry time; never raises for the app's answers."""
        assert self._client is not None
        body = {"events": [event.to_json() for event in batch]}
        delay = self._initial_backoff
        failures = 0
        give_up_at = time.monotonic() + self._retry_for
        while True:
            self.attempts += 1
            retry_after: float | None = None
            try:
                response = await self._client.post(self._url, json=body, headers=self._headers)
            except httpx.HTTPError as exc:
                reason = type(exc).__name__
            else:
                status = response.status_code
                if 200 <= status < 300:
                    self.delivered += len(batch)
                    if failures:
                        log.info("ingest for conversation %s recovered after %d retries", self._cid, failures)
                    return
                if status in _GONE:
                    log.warning(
                        "conversation %s is gone (HTTP %d): dropping %d event(s) and any later",
                        self._cid,
                        status,
                        len(batch),
                    )
                    self._drop(batch, gone=True)
                    return
                if status in _TOKEN_REJECTED:
                    log.error(
                        "ingest rejected the token for conversation %s (HTTP %d): dropping %d event(s) and "
                        "every later one; its transcript is not being stored",
                        self._cid,
                        status,
                        len(batch) + len(self._queue),
                    )
                    self._drop(batch, gone=True)
                    return
                if status == 422 and len(batch) > 1:
                    log.warning(
                        "ingest refused a batch of %d event(s) for %s (HTTP 422); sending them one by one",
                        len(batch),
                        self._cid,
                    )
                    for event in batch:
                        if not self._gone:
                            await self._deliver([event])
                        else:
                            self._drop([event])
                    return
                if status < 500 and status not in _RETRYABLE:
                    log.error(
                        "ingest refused %d event(s) for %s: HTTP %d; dropped (first item %s, %s, %s)",
                        len(batch),
                        self._cid,
                        status,
                        batch[0].item_id,
                        batch[0].role,
                        "final" if batch[0].final else "interim",
                    )
                    self._drop(batch)
                    return
                reason = f"HTTP {status}"
                retry_after = _retry_after(response)
            failures += 1
            pause = retry_after if retry_after is not None else delay * random.uniform(0.8, 1.2)
            if time.monotonic() + pause > give_up_at:
                log.error(
                    "ingest for conversation %s still failing (%s) after %d attempt(s) over %.0f s: dropped %d "
                    "event(s) (%d final), moving on to the next",
                    self._cid,
                    reason,
                    failures,
                    self._retry_for,
                    len(batch),
                    sum(event.final for event in batch),
                )
                self._drop(batch)
                return
            level = logging.WARNING if failures == 1 else logging.DEBUG
            log.log(level, "ingest for conversation %s failed (%s); retrying", self._cid, reason)
            await asyncio.sleep(pause)
            delay = min(delay * 2, self._max_backoff)

    def _drop(self, batch: list[WireEvent], *, gone: bool = False) -> None:
        self.dropped += len(batch)
        if gone:
            self._gone = True
            self.dropped += len(self._queue)
            self._queue.clear()


def _role(item: Any) -> Role | None:
    if getattr(item, "type", None) != "message":
        return None
    return {"user": "user", "assistant": "agent"}.get(getattr(item, "role", ""))  # type: ignore[return-value]


def _created(item: Any) -> datetime:
    created = getattr(item, "created_at", None)
    return datetime.fromtimestamp(created, UTC) if isinstance(created, int | float) else utcnow()


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after", "")
    return min(float(raw), 60.0) if raw.isdigit() else None
