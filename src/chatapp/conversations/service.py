"""The live conversation's rules: one active conversation per user, its agent, typed and dictated text, ingest."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, Literal

from chatapp.conversations import queries
from chatapp.conversations.agent_runtime import (
    DEFAULT_START_FAILURE,
    AgentRuntime,
    AgentStartError,
    ConversationInfo,
    StartInfo,
)
from chatapp.conversations.events import AgentStateEvent, TranscriptEvent
from chatapp.conversations.hub import Hub
from chatapp.conversations.live_events import AgentInterrupt, AgentText, Ended, History, LiveEvent, Recent
from chatapp.conversations.ownership import Ownership
from chatapp.conversations.pipeline import TranscriptPipeline, final_event
from chatapp.conversations.views import MessageView
from chatapp.core.database import connection
from chatapp.core.faults import Faults, InjectedFault
from chatapp.core.settings import Settings

log = logging.getLogger(__name__)


class ConversationGone(LookupError):
    """Unknown, or not this user's: answered as 404 so ids of other users' conversations leak nothing."""


class ConversationEnded(RuntimeError):
    """The conversation was saved (New Chat in another tab, or the idle reaper); the page should reload."""


class IngestClosed(RuntimeError):
    """The conversation ended longer ago than CHATAPP_LATE_FINAL_GRACE_SECONDS: its agent's token is spent."""


@dataclass(frozen=True)
class ChatView:
    conversation: queries.Conversation
    messages: list[MessageView]
    last_seq: int
    agent_state: str
    agent_detail: str
    start: StartInfo | None
    recent: list[queries.SavedSummary]


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


EndReason = Literal["new_chat", "api", "idle", "room_finished", "account_deleted"]


@dataclass(frozen=True)
class EndResult:
    outcome: queries.EndOutcome
    start: StartInfo | None

    @property
    def saved(self) -> queries.Conversation | None:
        return self.outcome.ended


@dataclass(frozen=True)
class ClientSave:
    """The JSON save API's answer: the conversation as it now stands (its message count 0 when it was empty
    and deleted) and whether it is saved."""

    conversation: queries.Conversation
    saved: bool


# A client's copy of an utterance matches the server's when role and text are equal and the times are this close.
TIMESTAMP_TOLERANCE = timedelta(seconds=2)


def missing_messages(
    events: Sequence[tuple[TranscriptEvent, bool]], existing: Sequence[queries.StoredUtterance]
) -> list[TranscriptEvent]:
    """Entries the server does not have: matched by id, else by role, text and time — never by text alone,
    because people say "yes" twice."""
    known_ids = {u.item_id for u in existing}
    unmatched = list(existing)
    missing: list[TranscriptEvent] = []
    for event, identifiable in events:
        if event.item_id in known_ids:
            continue
        match = next(
            (
                u
                for u in unmatched
                if identifiable
                and u.role == event.role
                and u.text == event.text
                and abs(u.created_at - event.timestamp) <= TIMESTAMP_TOLERANCE
            ),
            None,
        )
        if match is not None:
            unmatched.remove(match)  # one server utterance answers for one client entry
            continue
        missing.append(event)
    return missing


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
        self.runtime = runtime
        self.hub = hub
        self._starts: dict[uuid.UUID, StartInfo] = {}
        self._start_failures: dict[uuid.UUID, str] = {}  # what the panel says when the agent cannot start
        self.ownership = ownership or Ownership()
        self._agent_locks: dict[uuid.UUID, asyncio.Lock] = {}  # one start (or hand-over) at a time

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
    ) -> ChatView:
        messages = [MessageView.of_utterance(u) for u in utterances]
        messages += [MessageView.of_interim(e) for e in self.pipeline.buffer.pending(conversation.id)]
        state, detail = self.hub.agent_states.get(conversation.id) or ("idle" if start else "unavailable", "")
        if start is None:
            state, detail = "unavailable", self._start_failures.get(conversation.id, DEFAULT_START_FAILURE)
        recent = await queries.recent_saved(conversation.owner)
        last_seq = utterances[-1].seq if utterances else 0
        return ChatView(conversation, messages, last_seq, state, detail, start, recent)

    async def ensure_agent(
        self,
        conversation: queries.Conversation,
        display_name: str,
        utterances: Sequence[queries.StoredUtterance] | None = None,
    ) -> StartInfo | None:
        """Start the conversation's agent unless it runs here or in another live app process; None (and an
        'unavailable' status) when it cannot."""
        if self.runtime.is_running(conversation.id) and conversation.id in self._starts:
            return self._starts[conversation.id]
        async with self._agent_lock(conversation.id):
            return await self._start_agent(conversation, display_name, utterances)

    def _agent_lock(self, conversation_id: uuid.UUID) -> asyncio.Lock:
        return self._agent_locks.setdefault(conversation_id, asyncio.Lock())

    async def _start_agent(
        self,
        conversation: queries.Conversation,
        display_name: str,
        utterances: Sequence[queries.StoredUtterance] | None,
    ) -> StartInfo | None:
        """ensure_agent's work, under the conversation's agent lock."""
        if self.runtime.is_running(conversation.id) and conversation.id in self._starts:
            return self._starts[conversation.id]
        if not await self.ownership.claim(conversation.id):
            return StartInfo(mode="text")  # another live process runs it; typed text is handed over to it
        if utterances is None:
            utterances = await queries.list_utterances(conversation.id)
        # A user message stored while no agent ran (its process died, the app restarted) is answered now.
        answer_last = bool(utterances) and utterances[-1].role == "user"
        history = [(u.role, u.text) for u in utterances]
        if conversation.continued_from is not None:
            # Continuing a saved conversation: the agent's context is its transcript (which stays as it was)
            # and then what was said since, also when the agent is started again later.
            earlier = await queries.list_utterances(conversation.continued_from)
            history = [(u.role, u.text) for u in earlier] + history
        info = ConversationInfo(
            id=conversation.id,
            room_name=conversation.room_name,
            system_prompt=conversation.system_prompt or self.settings.system_prompt,
            user_display_name=display_name,
            user_id=conversation.owner,
            history=tuple(history),
            answer_last=answer_last,
        )
        try:
            self.faults.check("agent_start")
            start = await self.runtime.start(info)
        except (AgentStartError, InjectedFault) as exc:
            log.warning("agent for conversation %s could not start: %s", conversation.id, type(exc).__name__)
            detail = exc.detail if isinstance(exc, AgentStartError) else DEFAULT_START_FAILURE
            self._start_failures[conversation.id] = detail
            await self.ownership.release(conversation.id, only_mine=True)
            await self.pipeline.agent_state(AgentStateEvent(conversation.id, "unavailable", detail))
            return None
        self._start_failures.pop(conversation.id, None)
        self._starts[conversation.id] = start
        return start

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
        if self.runtime.is_running(conversation_id) or not getattr(self.runtime, "answers_typed_text", False):
            await self.runtime.send_text(conversation_id, text)
        else:
            await self._hand_over_text(conversation_id, text)
        return True

    async def _hand_over_text(self, conversation_id: uuid.UUID, text: str) -> None:
        """Typed text (already stored) for an agent not running here: to the live process that runs it, or
        else to a new agent here, which answers it as the conversation's last message."""
        async with self._agent_lock(conversation_id):
            if self.runtime.is_running(conversation_id):
                await self.runtime.send_text(conversation_id, text)
            elif (holder := await self.ownership.holder_elsewhere(conversation_id)) is not None:
                await self.hub.publish(AgentText(conversation_id=conversation_id, to=holder, text=text))
            elif (conversation := await queries.get_conversation(conversation_id)) is not None and conversation.active:
                await self._start_agent(conversation, "", None)

    async def interrupt(self, user_id: uuid.UUID, conversation_id: uuid.UUID) -> None:
        """The Stop button: cut the agent's current reply, wherever its agent runs. Nothing to stop is fine."""
        await self.owned_active(user_id, conversation_id)
        if self.runtime.is_running(conversation_id) or not getattr(self.runtime, "answers_typed_text", False):
            await self.runtime.interrupt(conversation_id)
        elif (holder := await self.ownership.holder_elsewhere(conversation_id)) is not None:
            await self.hub.publish(AgentInterrupt(conversation_id=conversation_id, to=holder))

    async def interrupt_local(self, conversation_id: uuid.UUID) -> None:
        """Stop handed over by another process, for this process's agent."""
        await self.runtime.interrupt(conversation_id)

    async def deliver_local_text(self, conversation_id: uuid.UUID, text: str) -> None:
        """Typed text handed over by another process: for this process's agent (if it is still here)."""
        async with self._agent_lock(conversation_id):
            if self.runtime.is_running(conversation_id):
                await self.runtime.send_text(conversation_id, text)
            else:
                log.warning("handed-over text for conversation %s found no agent here", conversation_id)

    async def ended_elsewhere(self, conversation_id: uuid.UUID) -> None:
        """Another process ended the conversation: stop its agent if it runs here, and forget it."""
        self._starts.pop(conversation_id, None)
        self._start_failures.pop(conversation_id, None)
        self._agent_locks.pop(conversation_id, None)
        await self.runtime.stop(conversation_id)  # idempotent, and waits for a start still in progress

    async def adopt(self, conversation_id: uuid.UUID) -> None:
        """Take over the agent of an active conversation whose process died (the lease decides who)."""
        conversation = await queries.get_conversation(conversation_id)
        if conversation is not None and conversation.active:
            await self.ensure_agent(conversation, "")

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

    async def ingest(self, conversation_id: uuid.UUID, events: Sequence[TranscriptEvent]) -> IngestResult:
        """Events from an out-of-process agent. Finals for an ended conversation are still stored (late,
        not lost) within the grace window after its end, refused after it; its interims are dropped, and
        nothing here ever starts a new conversation."""
        # No lookup first: storing the finals locks the conversation row anyway (and raises if it is
        # unknown), and the buffer already refuses interims for conversations that ended.
        try:
            stored = await self.pipeline.apply(
                conversation_id, events, self.settings.late_final_grace_seconds, source="api"
            )
        except queries.UnknownConversation:
            raise ConversationGone(str(conversation_id)) from None
        except queries.ConversationClosed:
            raise IngestClosed(str(conversation_id)) from None
        return IngestResult(stored=len(stored), ignored=len(events) - len(stored))

    async def end(
        self, user_id: uuid.UUID, expected: uuid.UUID | None, reason: EndReason, idle_seconds: float | None = None
    ) -> EndResult:
        """End the user's active conversation (`expected`, or whichever is active): the JSON save API, the idle
        reaper, LiveKit's room_finished and account deletion. `idle_seconds` (the idle reaper): end only if
        the conversation is still idle that long, checked under the lock."""
        return EndResult(await self._end_in_transaction(user_id, expected, reason, idle_seconds=idle_seconds), None)

    async def save_client_copy(
        self, user_id: uuid.UUID, conversation_id: uuid.UUID, events: Sequence[tuple[TranscriptEvent, bool]]
    ) -> ClientSave:
        """The JSON save API: add the entries of the client's copy of the transcript the server lacks, then end
        the conversation like any other end. ConversationGone for an unknown or another user's conversation."""
        conversation = await queries.get_conversation(conversation_id)
        if conversation is not None and conversation.owner != user_id:
            log.warning("user %s tried to save conversation %s of another user", user_id, conversation_id)
            conversation = None  # answered like a missing one: its existence is not theirs to learn
        if conversation is None:
            raise ConversationGone(str(conversation_id))
        if events:
            missing = missing_messages(events, await queries.list_utterances(conversation_id))
            if missing:
                await self.pipeline.apply(conversation_id, missing)
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
        outcome = await self._end_in_transaction(
            user_id, expected, "new_chat", next_prompt=self.settings.system_prompt, continue_from=continue_from
        )
        start = await self.ensure_agent(outcome.current, display_name) if outcome.current is not None else None
        return EndResult(outcome, start)

    async def _end_in_transaction(
        self,
        user_id: uuid.UUID,
        expected: uuid.UUID | None,
        reason: EndReason,
        *,
        next_prompt: str | None = None,
        continue_from: uuid.UUID | None = None,
        idle_seconds: float | None = None,
    ) -> queries.EndOutcome:
        """end's and new_chat's one path, so every guarantee holds for each caller.

        In one transaction under a per-user lock: flush pending interims as interrupted finals, keep the
        conversation (ended_at, title) or delete it if the user never spoke, and (with `next_prompt`) open the
        next one. Only after the commit: stop the old agent. A failed write changes nothing.
        """
        target = expected
        if target is None:
            active = await queries.get_active(user_id)
            target = active.id if active else None
        pending = self._pending_as_interrupted(target) if target else []
        async with connection() as conn, conn.transaction():
            outcome = await self._end_active(
                conn, user_id, expected, pending, reason, next_prompt, continue_from, idle_seconds
            )
            if self.faults.consume("slow_save"):
                await asyncio.sleep(1.0)
            self.faults.check("save")
        if outcome.changed:
            old_id = outcome.ended.id if outcome.ended else outcome.deleted_id
            assert old_id is not None
            await self._after_end(user_id, old_id, outcome, reason)
        return outcome

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
        if first is None:
            # The user never said anything (an agent greeting alone counts as empty): nothing worth keeping.
            await queries.delete_conversation(conn, active.id)
            deleted_id = active.id
        else:
            ended = await queries.mark_ended(conn, active.id, reason, make_title(first))
        current = None
        if next_prompt is not None:
            current = await queries.insert_active(conn, owner, next_prompt, continued_from)
        return queries.EndOutcome(ended, deleted_id, current, flushed, changed=True)

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
        self, user_id: uuid.UUID, old_id: uuid.UUID, outcome: queries.EndOutcome, reason: EndReason
    ) -> None:
        self.pipeline.forget(old_id)
        self._starts.pop(old_id, None)
        self._start_failures.pop(old_id, None)
        self._agent_locks.pop(old_id, None)
        # In one round trip: the flushed finals; every tab's sidebar shows the saved one; then tabs showing the
        # old conversation move on.
        events: list[LiveEvent] = [final_event(u) for u in outcome.flushed]
        if outcome.ended is not None:
            events.append(await self.history_event(user_id))
        events.append(Ended(conversation_id=old_id, user_id=user_id, reason=reason))
        await self.hub.publish_many(events)
        try:
            await self.runtime.stop(old_id)
            await self.ownership.release(old_id)
        except Exception:  # the save stands whatever the agent does on its way out
            log.exception("stopping the agent of conversation %s failed", old_id)

    async def publish_history(self, user_id: uuid.UUID) -> None:
        await self.hub.publish(await self.history_event(user_id))

    async def history_event(self, user_id: uuid.UUID) -> History:
        recent = await queries.recent_saved(user_id)
        return History(user_id=user_id, recent=[Recent(r.id, r.title, r.pinned) for r in recent])
