"""Runs the agent inside the app process as a text-only `AgentSession` (no room, no server, no audio).

Streaming: the session's transcription output (`session.output.transcription`) receives every text delta
of a reply as it is generated, with no room attached; each turn's end, text and interruption come from
the turn's `SpeechHandle` and the assistant `ChatMessage` it adds. Everything reported goes through one
ordered outbox per conversation, so a sink call is never cancelled by LiveKit and never reordered.

During a database outage a final that cannot be stored waits at the head of the outbox and is retried with
backoff until PostgreSQL is back, and the finals after it wait behind it (at most MAX_WAITING_FINALS per
conversation): all are stored in order, once each (storing is idempotent by item id, so a retry after a lost
acknowledgement adds nothing). Interims are dropped meanwhile (the final says it all); status updates keep their
place in the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from livekit.agents import AgentSession, APIConnectionError, APIStatusError, APITimeoutError, llm
from livekit.agents.types import NOT_GIVEN
from livekit.agents.voice import SpeechHandle, io
from livekit.agents.voice.agent_session import SessionConnectOptions
from livekit.agents.voice.events import CloseEvent, ErrorEvent

from chatapp.agents.product import TravelAgent, greeting_instructions
from chatapp.conversations.agent_runtime import AgentStartError, ConversationInfo, EventSink, StartInfo
from chatapp.conversations.assembler import TranscriptAssembler
from chatapp.conversations.events import AgentState, AgentStateEvent, TranscriptEvent
from chatapp.conversations.queries import LeaseLost, UnknownConversation
from chatapp.core import metrics
from chatapp.core.database import OutageNotice, is_outage

logger = logging.getLogger(__name__)

CLOSE_TIMEOUT = 5.0
FAILED_DETAIL = "The language model did not answer ({error}). Try again."
# LiveKit closes a session after a few consecutive LLM failures; here each failed turn is reported and the
# next turn simply tries again, so the session stays up.
_CONN_OPTIONS = SessionConnectOptions(max_unrecoverable_errors=1_000_000)

_Event = TranscriptEvent | AgentStateEvent
# Finals of one conversation that may wait for the database; a reply is one final, so this is generous.
MAX_WAITING_FINALS = 100
FIRST_TURN_DELAY = 0.05  # seconds: see _Conversation._work
RETRY_FIRST, RETRY_MAX = 0.25, 2.0  # seconds between attempts to store a waiting final


@dataclass
class _Reply:
    """One agent reply being streamed: its transcript (item id, text so far, one final) and how its turn went."""

    transcript: TranscriptAssembler
    speaking: bool = False
    error: str = ""
    handle: SpeechHandle | None = None
    stop_requested: bool = False  # the person pressed Stop (maybe before the turn's speech even existed)


class _TranscriptOutput(io.TextOutput):
    """Receives the reply text as LiveKit generates it (no room needed) and hands it to the conversation."""

    def __init__(self, conversation: _Conversation) -> None:
        super().__init__(label="chatapp", next_in_chain=None)
        self._conversation = conversation

    async def capture_text(self, text: str) -> None:
        self._conversation.on_text(text)

    def flush(self) -> None:
        """A segment ended; the reply's end is taken from its SpeechHandle instead."""


class _Conversation:
    """One running agent: its session, its turn queue (one reply at a time) and its event outbox."""

    def __init__(
        self, info: ConversationInfo, sink: EventSink, model: llm.LLM[Any], greet: bool, outage: OutageNotice
    ) -> None:
        self.info = info
        self.id = info.id
        self._sink = sink
        self._llm = model
        self._pending = ""
        if info.answer_last and info.history and info.history[-1][0] == "user":
            self._pending = info.history[-1][1]
            info = replace(info, history=info.history[:-1])
        self._greet = greet and not info.history and not self._pending
        self._agent = TravelAgent.for_conversation(info)
        self._session: AgentSession[None] | None = None
        self._session_lost = False
        self._turns: asyncio.Queue[str | None] = asyncio.Queue()
        self._outbox: asyncio.Queue[_Event | None] = asyncio.Queue()
        self._outage = outage  # the runtime's: one line when the database goes, one when it is back
        self._waiting = False  # a final is waiting for the database: interims are not queued meanwhile
        self._queued_finals = 0
        self._dropped_finals = 0
        self._reply: _Reply | None = None
        self._worker: asyncio.Task[None] | None = None
        self._emitter: asyncio.Task[None] | None = None
        self.closing = False
        self._gone = False  # the conversation was deleted (New Chat on an empty one): nothing more to report
        self.fenced = False  # its lease is another's: nothing more is reported, not even what is queued
        self.held = False  # its lease is unconfirmed: no interims or status meanwhile, finals under the lease only
        self._last_state: tuple[AgentState, str] | None = None

    async def start(self) -> None:
        self._emitter = asyncio.create_task(self._emit_events(), name=f"agent-events-{self.id}")
        await self._open_session()
        self._worker = asyncio.create_task(self._work(), name=f"agent-turns-{self.id}")

    def send_text(self, text: str) -> None:
        self._turns.put_nowait(text)

    def interrupt(self) -> bool:
        """Stop the reply being generated; it ends as an interrupted final with what it said so far.
        False when the agent is not replying."""
        reply = self._reply
        if reply is None or reply.transcript.finished or self.closing:
            return False
        reply.stop_requested = True
        if reply.handle is not None and not reply.handle.done():
            reply.handle.interrupt(force=True)
        return True

    async def close(self) -> None:
        """Interrupt any reply, report what it already said, then drain the outbox."""
        self.closing = True
        self._turns.put_nowait(None)
        if self._session is not None:
            await _quietly(self._session.aclose(), "session close", self.id)
        if self._worker is not None:
            await _finish(self._worker, self.id)
        reply = self._reply
        if reply is not None and not reply.transcript.finished:
            self._finish_reply(reply, reply.transcript.text, interrupted=True)
        await _quietly(self._llm.aclose(), "llm close", self.id)
        self._outbox.put_nowait(None)
        if self._emitter is not None:
            await _finish(self._emitter, self.id)

    async def _open_session(self) -> None:
        session: AgentSession[None] = AgentSession(
            llm=self._llm,
            vad=None,
            turn_handling={"turn_detection": "manual"},
            user_away_timeout=None,
            conn_options=_CONN_OPTIONS,
        )
        session.output.transcription = _TranscriptOutput(self)
        session.on("error", self._on_error)
        session.on("close", self._on_close)
        self._session_lost = False
        try:
            await session.start(self._agent)
        except BaseException:
            await _quietly(session.aclose(), "session close", self.id)
            raise
        self._session = session

    async def _work(self) -> None:
        if self._pending or self._greet:
            # The request that started the agent (New Chat, a page) answers first: generating a turn takes this
            # process's CPU in many small steps, which would otherwise come out of that reply's time.
            await asyncio.sleep(FIRST_TURN_DELAY)
        if self._pending:
            await self._respond(user_input=self._pending)
        elif self._greet:
            await self._respond(instructions=greeting_instructions(self.info.user_display_name))
        while not self.closing and (text := await self._turns.get()) is not None:
            await self._respond(user_input=text)

    async def _respond(self, *, user_input: str | None = None, instructions: str | None = None) -> None:
        """One turn, start to finish: thinking, streamed interims, one final, then idle or unavailable."""
        reply = self._reply = _Reply(TranscriptAssembler(f"agent-{uuid.uuid4().hex}"))
        self._state("thinking")
        try:
            if self._session is None or self._session_lost:
                # Closed under us (not by stop()): carry the conversation so far into a new session.
                self._agent = TravelAgent(instructions=self.info.system_prompt, chat_ctx=self._agent.chat_ctx.copy())
                await self._open_session()
            assert self._session is not None
            handle = reply.handle = self._session.generate_reply(
                user_input=user_input if user_input is not None else NOT_GIVEN,
                instructions=instructions if instructions is not None else NOT_GIVEN,
            )
            if reply.stop_requested:
                handle.interrupt(force=True)
            await handle
        except Exception as exc:  # the runtime outlives any failure of a single turn
            if self.closing:
                return
            logger.exception("agent turn failed", extra={"conversation_id": str(self.id)})
            reply.error = describe_error(exc)
            self._finish_reply(reply, reply.transcript.text, interrupted=False)
            self._state("unavailable", FAILED_DETAIL.format(error=reply.error))
            return
        said = [m for m in handle.chat_items if isinstance(m, llm.ChatMessage) and m.role == "assistant"]
        text = " ".join(m.text_content or "" for m in said) if said else reply.transcript.text
        interrupted = any(m.interrupted for m in said) if said else handle.interrupted
        if reply.stop_requested:
            # What reached the screen is what was said: text LiveKit generated after Stop is not kept.
            text, interrupted = reply.transcript.reported, True
        self._finish_reply(reply, text, interrupted=interrupted)
        if self.closing:
            return
        if error := handle.exception():
            reply.error = reply.error or describe_error(error)
        if reply.error:
            logger.warning(
                "agent reply failed",
                extra={"conversation_id": str(self.id), "item_id": reply.transcript.item_id, "error": reply.error},
            )
            self._state("unavailable", FAILED_DETAIL.format(error=reply.error))
        else:
            self._state("idle")

    def on_text(self, delta: str) -> None:
        """A piece of the current reply: report the whole text so far as an interim."""
        reply = self._reply
        if reply is None or reply.transcript.finished or reply.stop_requested:
            logger.debug("agent text outside a turn dropped", extra={"conversation_id": str(self.id)})
            return
        if (text := reply.transcript.add(delta)) is None:
            return
        if not reply.speaking:
            reply.speaking = True
            self._state("speaking")
        self._put(TranscriptEvent(self.id, reply.transcript.item_id, "agent", text, final=False, lease=self.info.lease))

    def _finish_reply(self, reply: _Reply, text: str, *, interrupted: bool) -> None:
        """Exactly one final per reply that said anything, with the reply's item id."""
        if (final := reply.transcript.finish(text)) is not None:
            item_id = reply.transcript.item_id
            event = TranscriptEvent(
                self.id, item_id, "agent", final, final=True, interrupted=interrupted, lease=self.info.lease
            )
            self._put(event)

    def _on_error(self, event: ErrorEvent) -> None:
        # A recoverable error is one LiveKit retries (a 429 or 500 once): the turn may still be answered.
        if getattr(event.error, "recoverable", False):
            return
        error = getattr(event.error, "error", event.error)
        if self._reply is not None and getattr(event.error, "type", "") == "llm_error":
            self._reply.error = describe_error(error) if isinstance(error, BaseException) else type(error).__name__

    def _on_close(self, event: CloseEvent) -> None:
        if not self.closing:
            logger.warning(
                "agent session closed unexpectedly",
                extra={"conversation_id": str(self.id), "reason": str(event.reason)},
            )
            self._session_lost = True

    def _state(self, state: AgentState, detail: str = "") -> None:
        self._last_state = (state, detail)
        self._put(AgentStateEvent(self.id, state, detail))

    def hold(self, held: bool) -> None:
        """Held: say nothing live until the lease is confirmed; then say where the agent is now."""
        was, self.held = self.held, held
        if was and not held and self._last_state is not None:
            self._put(AgentStateEvent(self.id, *self._last_state))

    def _put(self, event: _Event) -> None:
        final = isinstance(event, TranscriptEvent) and event.final
        if self.fenced or (self.held and not final):
            return
        if self._waiting and isinstance(event, TranscriptEvent) and not final:
            return  # the database is away: the reply's final will say it all
        if final:
            if self._queued_finals >= MAX_WAITING_FINALS:
                self._dropped_finals += 1
                if self._dropped_finals == 1:
                    logger.error(
                        "agent finals of conversation %s dropped: %d already wait", self.id, MAX_WAITING_FINALS
                    )
                return
            self._queued_finals += 1
        self._outbox.put_nowait(event)

    async def _emit_events(self) -> None:
        try:
            while (event := await self._outbox.get()) is not None:
                final = isinstance(event, TranscriptEvent) and event.final
                if self.fenced:
                    self._queued_finals -= final  # dropped on purpose, not lost
                    continue
                if not (self._gone and isinstance(event, TranscriptEvent)):  # else nothing to store it in
                    await self._emit(event, final)
                self._queued_finals -= final
        finally:  # also when close() gave up waiting for the database
            if lost := self._queued_finals + self._dropped_finals:
                logger.error("%d agent final(s) of conversation %s lost: the database did not come back", lost, self.id)

    async def _emit(self, event: _Event, final: bool) -> None:
        """Hand one event to the sink; a final is retried until the database takes it."""
        delay = RETRY_FIRST
        while not self.fenced:  # fenced while it waited for the database: dropped
            try:
                if isinstance(event, TranscriptEvent):
                    await self._sink.transcript(event)
                else:
                    await self._sink.agent_state(event)
            except UnknownConversation:
                # Expected: New Chat deleted the (empty) conversation while its greeting was still streaming.
                self._gone = True
                logger.info("conversation %s is gone; its agent's remaining output is dropped", self.id)
            except LeaseLost:
                # Another process took the conversation over while this one was cut off: it writes nothing more.
                self.fenced = True
                logger.warning("conversation %s was taken over; its agent's remaining output is dropped", self.id)
            except Exception as exc:
                if not is_outage(exc):
                    logger.exception(
                        "event sink failed", extra={"conversation_id": str(self.id), "event": type(event).__name__}
                    )
                    return
                self._outage.failed(exc)
                if final and not self.fenced:
                    self._waiting = True
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX)
                    continue
            else:
                if final:
                    self._outage.recovered()
            if final:
                self._waiting = False
            return


def describe_error(error: BaseException) -> str:
    """A short, safe reason for the chat panel: the HTTP status or the kind of failure, never the body."""
    if isinstance(error, APIStatusError) and error.status_code > 0:
        return f"HTTP {error.status_code}"
    if isinstance(error, APITimeoutError):
        return "timed out"
    if isinstance(error, APIConnectionError):
        return "could not connect"
    return type(error).__name__


async def _quietly(awaitable: Awaitable[Any], what: str, conversation_id: uuid.UUID) -> None:
    try:
        await asyncio.wait_for(awaitable, CLOSE_TIMEOUT)
    except Exception:
        logger.warning(f"{what} failed", exc_info=True, extra={"conversation_id": str(conversation_id)})


async def _finish(task: asyncio.Task[None], conversation_id: uuid.UUID) -> None:
    """Let a task end on its own, or cancel it after the close timeout."""
    done, _ = await asyncio.wait([task], timeout=CLOSE_TIMEOUT)
    if not done:
        logger.warning("agent task cancelled", extra={"conversation_id": str(conversation_id)})
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


async def _after(delay: float, work: Awaitable[None]) -> None:
    if delay > 0:
        await asyncio.sleep(delay)
    await work


class InProcessRuntime:
    """The `AgentRuntime` that runs each conversation's agent in this process, text in and text out."""

    answers_typed_text = True  # typed text posted to the app reaches this agent (LiveKit's goes over lk.chat)

    def __init__(self, sink: EventSink, llm_factory: Callable[[], llm.LLM[Any]], greet: bool = True) -> None:
        self._sink = sink
        self._llm_factory = llm_factory
        self._greet = greet
        self._conversations: dict[uuid.UUID, _Conversation] = {}
        self._starting: dict[uuid.UUID, asyncio.Future[None]] = {}
        self._detached: set[asyncio.Task[None]] = set()  # detach's stops still under way
        self._closed = False
        self._outage = OutageNotice(logger, "agent output")

    async def start(self, conversation: ConversationInfo) -> StartInfo:
        if self._closed:
            raise AgentStartError("the agent runtime is shut down")
        if conversation.id in self._conversations:
            return StartInfo(mode="text")
        if (pending := self._starting.get(conversation.id)) is not None:
            await asyncio.shield(pending)
            return StartInfo(mode="text")
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._starting[conversation.id] = started
        running: _Conversation | None = None
        try:
            running = _Conversation(conversation, self._sink, self._llm_factory(), self._greet, self._outage)
            await running.start()
        except Exception as exc:
            logger.exception("agent start failed", extra={"conversation_id": str(conversation.id)})
            if running is not None:
                await running.close()
            started.set_exception(AgentStartError("the agent could not be started"))
            started.exception()  # retrieved here; waiters get it through shield
            raise AgentStartError("the agent could not be started") from exc
        else:
            self._conversations[conversation.id] = running
            metrics.ACTIVE_AGENTS.set(len(self._conversations))
            started.set_result(None)
        finally:
            self._starting.pop(conversation.id, None)
        logger.info("agent started", extra={"conversation_id": str(conversation.id)})
        return StartInfo(mode="text")

    async def send_text(self, conversation_id: uuid.UUID, text: str) -> None:
        running = self._conversations.get(conversation_id)
        if running is None or running.closing:
            # Stopped between the app's is_running() check and this call: the text is stored, not answered.
            logger.warning("text for a stopped agent ignored", extra={"conversation_id": str(conversation_id)})
            return
        running.send_text(text)

    async def interrupt(self, conversation_id: uuid.UUID) -> bool:
        running = self._conversations.get(conversation_id)
        interrupted = running is not None and running.interrupt()
        if interrupted:
            logger.info("agent reply interrupted", extra={"conversation_id": str(conversation_id)})
        return interrupted

    async def stop(self, conversation_id: uuid.UUID) -> None:
        if (pending := self._starting.get(conversation_id)) is not None:
            with contextlib.suppress(Exception):  # a failed start leaves nothing to stop
                await asyncio.shield(pending)
        await self._close(self._conversations.pop(conversation_id, None))

    def detach(self, conversation_id: uuid.UUID, delay: float = 0.0) -> asyncio.Task[None]:
        """stop() in two steps, so a caller can answer before the agent has wound down: from now on the agent is
        not running here (is_running is False, no text reaches it); the task returned finishes the stop, `delay`
        seconds later (its unfinished reply reported as interrupted, its session closed). aclose waits for it."""
        if conversation_id in self._starting:
            closing = self.stop(conversation_id)  # the start decides what there is to stop
        elif (running := self._conversations.pop(conversation_id, None)) is not None:
            closing = self._close(running)
        else:
            closing, delay = self._close(None), 0.0  # nothing runs here: nothing to wait for
        task = asyncio.create_task(_after(delay, closing), name=f"agent-stop-{conversation_id}")
        self._detached.add(task)
        task.add_done_callback(self._detached.discard)
        return task

    async def _close(self, running: _Conversation | None) -> None:
        if running is None:
            return
        metrics.ACTIVE_AGENTS.set(len(self._conversations))
        await running.close()
        logger.info("agent stopped", extra={"conversation_id": str(running.id)})

    def hold(self, conversation_id: uuid.UUID, held: bool) -> None:
        """Hold (or let go on) the agent's live output while its lease is unconfirmed (ownership.fence_overdue)."""
        if (running := self._conversations.get(conversation_id)) is not None:
            running.hold(held)

    async def fence(self, conversation_id: uuid.UUID) -> None:
        """Stop the agent without reporting anything more (its lease is, or is about to be, another process's)."""
        if (running := self._conversations.get(conversation_id)) is not None:
            running.fenced = True
            logger.warning("agent fenced off", extra={"conversation_id": str(conversation_id)})
        await self.stop(conversation_id)

    def is_running(self, conversation_id: uuid.UUID) -> bool:
        running = self._conversations.get(conversation_id)
        return running is not None and not running.closing

    def running(self) -> list[uuid.UUID]:
        """The conversations whose agent runs in this process."""
        return [cid for cid, running in self._conversations.items() if not running.closing]

    async def aclose(self) -> None:
        self._closed = True
        await asyncio.gather(*(self.stop(cid) for cid in list(self._conversations)), *self._detached)
