"""The live conversation's rules: one active conversation per user, its agent, typed and dictated text, ingest."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import asyncpg

from chatapp.conversations import queries
from chatapp.conversations.agent_runtime import AgentRuntime, StartInfo
from chatapp.conversations.client_copy import merge_client_copy
from chatapp.conversations.events import TranscriptEvent, utcnow
from chatapp.conversations.hub import Hub, Listener
from chatapp.conversations.live_events import Ended, History, LiveEvent, Recent, Reopened
from chatapp.conversations.live_response import EventStream
from chatapp.conversations.ownership import Ownership
from chatapp.conversations.pipeline import TranscriptPipeline, final_event
from chatapp.conversations.speech import SpeechUnavailable, Transcriber
from chatapp.conversations.stream import conversation_events
from chatapp.conversations.stream_slots import StreamSlots
from chatapp.conversations.supervisor import AgentSupervisor
from chatapp.conversations.views import Fragments, MessageView
from chatapp.core import metrics
from chatapp.core.database import DatabaseUnavailable, connection
from chatapp.core.faults import Faults, InjectedFault
from chatapp.core.settings import Settings

log = logging.getLogger(__name__)


class ConversationGone(LookupError):
    """Unknown, or not this user's: answered as 404 so ids of other users' conversations leak nothing."""


class ConversationEnded(RuntimeError):
    """The conversation was saved (New Chat in another tab, or the idle reaper); the page should reload."""


class IngestClosed(RuntimeError):
    """The conversation ended longer ago than CHATAPP_LATE_FINAL_GRACE_SECONDS: its agent's token is spent."""


class SaveFailed(RuntimeError):
    """New Chat could not save the conversation (nothing changed); the person can try again."""


class CannotRetry(RuntimeError):
    """Retry names a reply that is no longer the conversation's last (answered since, or already replaced), or
    the agent cannot be asked again here (LiveKit voice: ask again by speaking); the message says which."""


class TooManyStreams(RuntimeError):
    """The user already has CHATAPP_MAX_STREAMS_PER_USER live views open (in all processes); the message says so."""


# What can make New Chat's save fail: the write itself (or its injected stand-in), or the database going away.
SAVE_FAILURES = (InjectedFault, asyncpg.PostgresError, OSError, DatabaseUnavailable)
# How many of the continued conversation's last turns the chat panel shows.
CONTEXT_TURNS = 4


@dataclass(frozen=True)
class Origin:
    """The saved conversation a continued one comes from, as the chat panel shows it: its last few turns."""

    id: uuid.UUID
    title: str
    turns: list[MessageView]


@dataclass(frozen=True)
class ChatView:
    conversation: queries.Conversation
    messages: list[MessageView]
    last_seq: int
    agent_state: str
    agent_detail: str
    start: StartInfo | None
    recent: list[queries.SavedSummary]
    # The header: the saved title, else what the first message will make it.
    header_title: str | None = None
    origin: Origin | None = None


TITLE_LENGTH = 60


def make_title(text: str, limit: int = TITLE_LENGTH) -> str:
    """A saved conversation's title: the first user utterance, on one line, cut at a word boundary with an
    ellipsis when too long."""
    line = " ".join(text.split())
    if len(line) <= limit:
        return line
    cut = line[: limit - 1]
    if " " in cut[limit // 2 :]:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,.;:!?-") + "…"


def new_chat_outcome(outcome: queries.EndOutcome) -> str:
    """New Chat's metric label: what happened to the conversation it ended."""
    if outcome.ended is not None:
        return "saved"
    return "deleted_empty" if outcome.deleted_id is not None else "nothing"


EndReason = Literal["new_chat", "api", "idle", "room_finished", "account_deleted"]


@dataclass(frozen=True)
class EndResult:
    outcome: queries.EndOutcome
    start: StartInfo | None
    # The sidebar as read for the tabs right after the save, when it was (the new panel shows the same list).
    recent: list[queries.SavedSummary] | None = None

    @property
    def saved(self) -> queries.Conversation | None:
        return self.outcome.ended


@dataclass(frozen=True)
class ClientSave:
    """The JSON save API's answer: the conversation as it now stands (its message count 0 when it was empty
    and deleted) and whether it is saved."""

    conversation: queries.Conversation
    saved: bool


@dataclass(frozen=True)
class IngestResult:
    stored: int
    ignored: int


class ConversationService:
    def __init__(
        self,
        settings: Settings,
        pipeline: TranscriptPipeline,
        runtime: AgentRuntime,
        hub: Hub,
        faults: Faults | None = None,
        ownership: Ownership | None = None,
    ) -> None:
        self.settings = settings
        self.faults = faults or Faults()
        self.pipeline = pipeline
        self.hub = hub
        self.agents = AgentSupervisor(runtime, pipeline, hub, settings.system_prompt, self.faults, ownership)
        self.stream_slots = StreamSlots()
        self.transcriber = Transcriber(settings) if settings.stt_configured else None

    async def open(self, user_id: uuid.UUID, display_name: str) -> ChatView:
        """The user's active conversation (created if needed) with its transcript so far and a running agent."""
        conversation, _ = await queries.get_or_create_active(user_id, self.settings.system_prompt)
        utterances = await queries.list_utterances(conversation.id)
        start = await self.ensure_agent(conversation, display_name, utterances)
        return await self.view(conversation, start, utterances)

    async def view(
        self,
        conversation: queries.Conversation,
        start: StartInfo | None,
        utterances: Sequence[queries.StoredUtterance] = (),
        recent: list[queries.SavedSummary] | None = None,
    ) -> ChatView:
        messages = [MessageView.of_utterance(u) for u in utterances]
        messages += [MessageView.of_interim(e) for e in self.pipeline.buffer.pending(conversation.id)]
        state, detail = self.hub.agent_states.get(conversation.id) or ("idle" if start else "unavailable", "")
        if start is None:
            state, detail = "unavailable", self.agents.start_failure(conversation.id)
        if recent is None:
            recent = await queries.recent_saved(conversation.owner)
        last_seq = utterances[-1].seq if utterances else 0
        first = next((m.text for m in messages if m.role == "user" and m.final), None)
        title = conversation.title or (make_title(first) if first else None)
        origin = await self._origin(conversation)
        return ChatView(conversation, messages, last_seq, state, detail, start, recent, title, origin)

    async def view_with_transcript(self, conversation: queries.Conversation, start: StartInfo | None) -> ChatView:
        """The chat panel of a conversation that has a transcript already (a reopened one)."""
        return await self.view(conversation, start, await queries.list_utterances(conversation.id))

    @staticmethod
    async def _origin(conversation: queries.Conversation) -> Origin | None:
        """For a continued conversation, what is being continued (unless it was deleted meanwhile)."""
        if conversation.continued_from is None:
            return None
        earlier = await queries.get_conversation(conversation.continued_from, owner=conversation.owner)
        if earlier is None:
            return None
        turns = await queries.list_utterances(earlier.id, after_seq=max(0, earlier.last_seq - CONTEXT_TURNS))
        title = earlier.title or "Untitled conversation"
        return Origin(earlier.id, title, [MessageView.of_utterance(u) for u in turns])

    async def admit_stream(self, user_id: uuid.UUID, conversation_id: uuid.UUID) -> uuid.UUID:
        """A tab may open a live view of the user's conversation (active or saved): its stream slot, or
        ConversationGone for anyone else's, TooManyStreams past the per-user cap (across all processes)."""
        if await queries.get_conversation(conversation_id, owner=user_id) is None:
            raise ConversationGone(str(conversation_id))
        limit = self.settings.max_streams_per_user
        if (slot := await self.stream_slots.take(user_id, limit)) is None:
            raise TooManyStreams(f"Too many live views open ({limit}) for this account. Close some tabs, then reload.")
        return slot

    def live_events(
        self,
        slot: uuid.UUID,
        conversation_id: uuid.UUID,
        user_id: uuid.UUID,
        cursor: int,
        fragments: Fragments,
        session: str,
    ) -> EventStream:
        """A tab's live view (in the slot admit_stream gave it): the finals after `cursor`, then everything as
        it happens, as the stream's response."""
        listener = Listener(conversation_id, user_id)
        events = conversation_events(
            self.hub, self.pipeline.buffer, fragments, listener, cursor, session, self.stream_slots, slot
        )
        return EventStream(events, listener.close)

    async def ensure_agent(
        self,
        conversation: queries.Conversation,
        display_name: str,
        utterances: Sequence[queries.StoredUtterance] | None = None,
    ) -> StartInfo | None:
        """The conversation's agent, started unless it runs here or in another live app process; None (and an
        'unavailable' status) when it cannot start."""
        return await self.agents.ensure(conversation, display_name, utterances)

    @staticmethod
    async def is_active(user_id: uuid.UUID, conversation_id: uuid.UUID) -> bool:
        """Whether it is the user's active conversation; ConversationGone when it is not theirs at all."""
        conversation = await queries.get_conversation(conversation_id, owner=user_id)
        if conversation is None:
            raise ConversationGone(str(conversation_id))
        return conversation.active

    async def owned_active(self, user_id: uuid.UUID, conversation_id: uuid.UUID) -> queries.Conversation:
        conversation = await queries.get_conversation(conversation_id, owner=user_id)
        if conversation is None:
            raise ConversationGone(str(conversation_id))
        if not conversation.active:
            raise ConversationEnded(str(conversation_id))
        return conversation

    async def send_text(self, user_id: uuid.UUID, conversation_id: uuid.UUID, text: str, item_id: str) -> bool:
        """Store typed text as a final user utterance, then hand it to the agent. False for a repeated post."""
        await self.owned_active(user_id, conversation_id)
        try:
            stored = await self.pipeline.apply(
                conversation_id,
                [TranscriptEvent(conversation_id, item_id, "user", text, final=True)],
            )
        except queries.UnknownConversation:
            raise ConversationGone(str(conversation_id)) from None
        if not stored:
            return False
        if await queries.is_first_user_message(conversation_id, stored[0].seq):
            await self.publish_history(user_id)  # the conversation shows in every tab's sidebar from now on
        await self.agents.send_text(conversation_id, text)
        return True

    async def retry(self, user_id: uuid.UUID, conversation_id: uuid.UUID, seq: int) -> None:
        """The Retry button on the agent's last reply (`seq`): that reply is kept, marked superseded, and the agent
        answers the user's last message again. CannotRetry when `seq` is not the last reply any more (a second
        click, another tab's retry, a newer message) or in LiveKit voice mode."""
        await self.owned_active(user_id, conversation_id)
        if not self.agents.runtime.answers_typed_text:
            raise CannotRetry("In voice mode, ask again by speaking.")
        if await queries.last_current(conversation_id) != (seq, "agent"):
            raise CannotRetry("Only the agent's last reply can be retried.")
        await self.agents.retry(conversation_id)

    async def interrupt(self, user_id: uuid.UUID, conversation_id: uuid.UUID) -> None:
        """The Stop button: cut the agent's current reply, wherever its agent runs. Nothing to stop is fine."""
        await self.owned_active(user_id, conversation_id)
        await self.agents.interrupt(conversation_id)

    async def dictate(
        self, user_id: uuid.UUID, conversation_id: uuid.UUID, item_id: str, text: str, final: bool
    ) -> None:
        """Browser dictation: interims update in place; the final is stored and answered like typed text."""
        if final:
            await self.send_text(user_id, conversation_id, text, item_id)
            return
        await self.owned_active(user_id, conversation_id)
        await self.pipeline.apply(
            conversation_id, [TranscriptEvent(conversation_id, item_id, "user", text, final=False)]
        )

    async def dictate_audio(self, user_id: uuid.UUID, conversation_id: uuid.UUID, item_id: str, audio: bytes) -> str:
        """Server dictation: a recording transcribed by the configured speech-to-text, stored and answered like
        typed text (a retried post with the same item_id is stored once). Ownership is checked before any work."""
        await self.owned_active(user_id, conversation_id)
        if self.transcriber is None:
            raise SpeechUnavailable("Dictation is not set up on this server. You can still type.")
        text = await self.transcriber.transcribe(audio)
        await self.send_text(user_id, conversation_id, text, item_id)
        return text

    async def ingest(
        self, conversation_id: uuid.UUID, events: Sequence[TranscriptEvent], period: int = 0
    ) -> IngestResult:
        """Events from an out-of-process agent of one period of the conversation. Finals for an ended period are
        still stored (late, not lost) within the grace window after its end, refused after it; its interims are
        dropped, and nothing here ever starts a new conversation. An earlier period's finals (the conversation
        was reopened since) go in that period's place, never among the current period's live messages.

        The usual case (finals for the current period of an open conversation) is one statement
        (pipeline.ingest); everything else takes the checks and the transaction below."""
        written = await self.pipeline.ingest(conversation_id, events, period)
        if written is not None:
            if written.first_user_message:
                await self.publish_history(written.owner)  # a spoken first message: the sidebar shows it now
            return IngestResult(stored=len(written.stored), ignored=len(events) - len(written.stored))
        conversation = await queries.get_conversation(conversation_id)
        if conversation is None:
            raise ConversationGone(str(conversation_id))
        if period != conversation.period:
            return await self._ingest_earlier_period(conversation, period, events)
        # Storing the finals locks the conversation row (and raises if it was deleted meanwhile), and the buffer
        # refuses interims for conversations that ended.
        try:
            stored = await self.pipeline.apply(
                conversation_id, events, self.settings.late_final_grace_seconds, source="api"
            )
        except queries.UnknownConversation:
            raise ConversationGone(str(conversation_id)) from None
        except queries.ConversationClosed:
            raise IngestClosed(str(conversation_id)) from None
        said = next((u for u in stored if u.role == "user"), None)
        if conversation.active and said and await queries.is_first_user_message(conversation_id, said.seq):
            await self.publish_history(conversation.owner)  # a spoken first message: the sidebar shows it now
        return IngestResult(stored=len(stored), ignored=len(events) - len(stored))

    async def _ingest_earlier_period(
        self, conversation: queries.Conversation, period: int, events: Sequence[TranscriptEvent]
    ) -> IngestResult:
        if period > conversation.period:  # a period that no longer exists (an empty one, undone)
            raise IngestClosed(str(conversation.id))
        try:
            async with connection() as conn, conn.transaction():
                stored = await queries.store_earlier_period_finals(
                    conn, conversation, period, events, self.settings.late_final_grace_seconds
                )
        except queries.ConversationClosed:
            raise IngestClosed(str(conversation.id)) from None
        return IngestResult(stored=stored, ignored=len(events) - stored)

    async def reopen(self, user_id: uuid.UUID, conversation_id: uuid.UUID, display_name: str) -> EndResult:
        """Continue a saved conversation in place: the active one is ended first exactly as New Chat ends it,
        then this one is active again (same id and title, a new period with a room of its own), all in one
        transaction under the user's lock; then its agent starts with the transcript as context.
        ConversationGone when it is not the user's saved conversation (nothing changes)."""
        outcome, _ = await self._end_in_transaction(user_id, None, "new_chat", reopen=conversation_id)
        current = outcome.current
        assert current is not None
        self.pipeline.buffer.reopen(current.id)
        await self.hub.publish_many([Reopened(conversation_id=current.id), await self.history_event(user_id)])
        return EndResult(outcome, await self.ensure_agent(current, display_name))

    async def end(
        self, user_id: uuid.UUID, expected: uuid.UUID | None, reason: EndReason, idle_seconds: float | None = None
    ) -> EndResult:
        """End the user's active conversation (`expected`, or whichever is active): the JSON save API, the idle
        reaper, LiveKit's room_finished and account deletion. `idle_seconds` (the idle reaper): end only if
        the conversation is still idle that long, checked under the lock."""
        outcome, _ = await self._end_in_transaction(user_id, expected, reason, idle_seconds=idle_seconds)
        return EndResult(outcome, None)

    async def save_client_copy(
        self, user_id: uuid.UUID, conversation_id: uuid.UUID, events: Sequence[TranscriptEvent]
    ) -> ClientSave:
        """The JSON save API: add the entries of the client's copy of the transcript the server lacks (matched by
        order, see client_copy), then end the conversation like any other end. ConversationGone for an unknown
        or another user's conversation."""
        conversation = await queries.get_conversation(conversation_id)
        if conversation is not None and conversation.owner != user_id:
            log.warning("user %s tried to save conversation %s of another user", user_id, conversation_id)
            conversation = None  # answered like a missing one: its existence is not theirs to learn
        if conversation is None:
            raise ConversationGone(str(conversation_id))
        if events:
            async with connection() as conn, conn.transaction():
                try:
                    server = await queries.lock_transcript(conn, conversation_id)
                except queries.UnknownConversation:  # deleted meanwhile (New Chat on an empty one)
                    raise ConversationGone(str(conversation_id)) from None
                current = await queries.get_conversation(conversation_id)  # under the lock: its period as it is
                period_start = current.reopened_after_seq if current is not None else 0
                merged = merge_client_copy(events, server, conversation.started_at, utcnow(), period_start)
                await queries.store_in_order(conn, conversation_id, merged)
        result = await self.end(user_id, conversation_id, "api")
        if result.outcome.deleted_id == conversation_id:
            return ClientSave(replace(conversation, last_seq=0), saved=False)
        current = result.saved or await queries.get_conversation(conversation_id)
        assert current is not None
        return ClientSave(current, saved=current.ended_at is not None)

    async def new_chat(
        self,
        user_id: uuid.UUID,
        display_name: str,
        expected: uuid.UUID | None = None,
        continue_from: uuid.UUID | None = None,
    ) -> EndResult:
        """New Chat (and Continue): end the active conversation and open the next one in the same transaction,
        so a double click or a second tab saves once and opens one; then start the next one's agent."""
        started: list[StartInfo | None] = []

        async def start_next(opened: queries.Conversation) -> None:
            # Opened by this transaction, so nothing has been said in it: no transcript to read.
            started.append(await self.ensure_agent(opened, display_name, ()))

        outcome, recent = await self._end_in_transaction(
            user_id,
            expected,
            "new_chat",
            next_prompt=self.settings.system_prompt,
            continue_from=continue_from,
            alongside=start_next,
        )
        if outcome.current is None:
            return EndResult(outcome, None, recent)
        start = started[0] if started else await self.ensure_agent(outcome.current, display_name)
        return EndResult(outcome, start, recent)

    async def press_new_chat(self, user_id: uuid.UUID, display_name: str, expected: uuid.UUID | None) -> EndResult:
        """The New Chat button: new_chat, counted in the metrics by outcome. SaveFailed (logged, counted) when
        the save failed, which changed nothing."""
        try:
            result = await self.new_chat(user_id, display_name, expected)
        except SAVE_FAILURES as exc:
            metrics.NEW_CHAT.labels("failed").inc()
            log.error("saving conversation for New Chat failed: %s", type(exc).__name__)
            raise SaveFailed(type(exc).__name__) from None
        metrics.NEW_CHAT.labels(new_chat_outcome(result.outcome)).inc()
        return result

    async def _end_in_transaction(
        self,
        user_id: uuid.UUID,
        expected: uuid.UUID | None,
        reason: EndReason,
        *,
        next_prompt: str | None = None,
        continue_from: uuid.UUID | None = None,
        idle_seconds: float | None = None,
        reopen: uuid.UUID | None = None,
        alongside: Callable[[queries.Conversation], Awaitable[None]] | None = None,
    ) -> tuple[queries.EndOutcome, list[queries.SavedSummary] | None]:
        """end's and new_chat's one path, so every guarantee holds for each caller.

        In one transaction under a per-user lock: flush pending interims as interrupted finals, keep the
        conversation (ended_at, title) or delete it if the user never spoke, and (with `next_prompt`) open the
        next one. Only after the commit: tell the tabs, stop the old agent, and meanwhile (their round trips
        overlap) run `alongside` on the conversation the transaction opened, if it did. A failed write changes
        nothing. Returns the outcome and the sidebar the tabs were sent (None when none was).
        """
        for saved in (reopen, continue_from):
            if saved is not None:
                await self.agents.stopped(saved)
        target = expected
        if target is None:
            active = await queries.get_active(user_id)
            target = active.id if active else None
        pending = self._pending_as_interrupted(target) if target else []
        async with connection() as conn, conn.transaction():
            active = await queries.lock_active(conn, user_id) if reopen is not None else None
            if active is not None and active.id == reopen:
                outcome = queries.EndOutcome(None, None, active, [], changed=False)  # it is the active one already
            else:
                outcome = await self._end_active(
                    conn, user_id, expected, pending, reason, next_prompt, continue_from, idle_seconds
                )
                if reopen is not None:
                    outcome = await self._reopen_after(conn, user_id, reopen, outcome)
            if self.faults.consume("slow_save"):
                await asyncio.sleep(1.0)
            self.faults.check("save")
        recent = None
        if outcome.changed:
            old_id = outcome.ended.id if outcome.ended else outcome.deleted_id
            assert old_id is not None
            # Unless reopened, the active conversation now is none or the one just opened: untitled, nothing said.
            telling = self._after_end(user_id, old_id, outcome, reason, untitled_current=reopen is None)
            if alongside is not None and outcome.current is not None and reopen is None:
                recent, _ = await asyncio.gather(telling, alongside(outcome.current))
            else:
                recent = await telling
        return outcome, recent

    @staticmethod
    async def _end_active(
        conn: Any,
        owner: uuid.UUID,
        expected: uuid.UUID | None,
        flush: Sequence[TranscriptEvent],
        reason: str,
        next_prompt: str | None,
        continued_from: uuid.UUID | None,
        idle_seconds: float | None,
    ) -> queries.EndOutcome:
        """The rules of ending, inside the caller's transaction and under the user's lock.

        `expected` is the conversation the caller means to end: when another request already ended it (double
        click, second tab, retry) nothing more happens and the current active conversation is returned. With
        `idle_seconds` it ends only if still idle that long, so a message that arrived after the reaper's scan
        keeps the conversation open. A conversation the user never spoke in is deleted, not saved; a saved
        one is titled after the user's first utterance.
        """
        active = await queries.lock_active(conn, owner)
        if active is None or (expected is not None and active.id != expected):
            current = active
            if current is None and next_prompt is not None:
                current = await queries.insert_active(conn, owner, next_prompt, continued_from)
            return queries.EndOutcome(None, None, current, [], changed=False)
        if idle_seconds is not None and not await queries.still_idle(conn, active.id, idle_seconds):
            return queries.EndOutcome(None, None, active, [], changed=False)

        flushed = await queries.store_finals(conn, active.id, [e for e in flush if e.conversation_id == active.id])
        first = await queries.first_user_text(conn, active.id)
        ended: queries.Conversation | None = None
        deleted_id: uuid.UUID | None = None
        if await queries.said_nothing_since_reopening(conn, active):
            # Reopened, then left without a word: saved exactly as it was before (same end, same place).
            ended = await queries.undo_reopen(conn, active)
        elif first is None:
            # The user never said anything (an agent greeting alone counts as empty): nothing worth keeping.
            await queries.delete_conversation(conn, active.id)
            deleted_id = active.id
        else:
            ended = await queries.mark_ended(conn, active.id, reason, make_title(first))
        current = None
        if next_prompt is not None:
            current = await queries.insert_active(conn, owner, next_prompt, continued_from)
        return queries.EndOutcome(ended, deleted_id, current, flushed, changed=True)

    @staticmethod
    async def _reopen_after(
        conn: Any, owner: uuid.UUID, conversation_id: uuid.UUID, outcome: queries.EndOutcome
    ) -> queries.EndOutcome:
        """Reopen's second step, in the same transaction: the active conversation (if any) has ended."""
        reopened = await queries.reopen(conn, owner, conversation_id)
        if reopened is None:
            raise ConversationGone(str(conversation_id))  # rolls back: the active conversation stays as it was
        return replace(outcome, current=reopened)

    def _pending_as_interrupted(self, conversation_id: uuid.UUID) -> list[TranscriptEvent]:
        """Whatever was still being said, saved as it stands and marked as cut off; an interim PostgreSQL
        would refuse is dropped (with a warning) rather than failing the whole save, every time."""
        flush = []
        for event in self.pipeline.buffer.pending(conversation_id):
            if reason := queries.unstorable(event):
                log.warning("unstorable interim dropped from conversation %s: %s", conversation_id, reason)
                continue
            flush.append(replace(event, final=True, interrupted=True))
        return flush

    async def _after_end(
        self,
        user_id: uuid.UUID,
        old_id: uuid.UUID,
        outcome: queries.EndOutcome,
        reason: EndReason,
        untitled_current: bool,
    ) -> list[queries.SavedSummary] | None:
        """Tell the tabs (returning the sidebar they were sent, if any), then stop the old agent without waiting
        for it to wind down (AgentSupervisor.stop_soon)."""
        self.pipeline.forget(old_id)
        self.agents.forget(old_id)
        # In one round trip: the flushed finals; every tab's sidebar shows the saved one; then tabs showing the
        # old conversation move on.
        events: list[LiveEvent] = [final_event(u) for u in outcome.flushed]
        recent = None
        if outcome.ended is not None:
            recent = await queries.recent_saved(user_id)
            current = None if untitled_current else await queries.current_titled(user_id)
            events.append(self._history(user_id, recent, current))
        events.append(Ended(conversation_id=old_id, user_id=user_id, reason=reason))
        await self.hub.publish_many(events)
        try:
            await self.agents.stop_soon(old_id)
        except Exception:  # the save stands whatever the agent does on its way out
            log.exception("stopping the agent of conversation %s failed", old_id)
        return recent

    async def publish_history(self, user_id: uuid.UUID) -> None:
        await self.hub.publish(await self.history_event(user_id))

    async def history_event(self, user_id: uuid.UUID) -> History:
        return self._history(user_id, await queries.recent_saved(user_id), await queries.current_titled(user_id))

    @staticmethod
    def _history(
        user_id: uuid.UUID, recent: list[queries.SavedSummary], current: tuple[uuid.UUID, str] | None
    ) -> History:
        return History(
            user_id=user_id,
            recent=[Recent(r.id, r.title, r.pinned) for r in recent],
            current=Recent(current[0], make_title(current[1])) if current else None,
        )
