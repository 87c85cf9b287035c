"""The agents of active conversations, as this process sees them: which are started, which failed to start and
why, one start (or hand-over) at a time per conversation, and who holds each one's lease.

The conversation service asks it and never tracks agents itself (as livekit-agents' `AgentSession` hands its
state machine to `AgentActivity`): everything about an agent is forgotten in one place when its conversation
ends, here or in another process.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Sequence

from chatapp.conversations import queries
from chatapp.conversations.agent_runtime import (
    DEFAULT_START_FAILURE,
    AgentRuntime,
    AgentStartError,
    ConversationInfo,
    EventSink,
    StartInfo,
)
from chatapp.conversations.events import AgentStateEvent
from chatapp.conversations.hub import Hub
from chatapp.conversations.live_events import AgentInterrupt, AgentRetry, AgentText
from chatapp.conversations.ownership import Ownership
from chatapp.conversations.pipeline import final_event
from chatapp.core.faults import Faults, InjectedFault

log = logging.getLogger(__name__)

# stop_soon winds an agent down this much later: closing its session costs this process a few ms of CPU, which
# would otherwise come out of the reply to the request that ended the conversation (New Chat's, on its way out).
STOP_AFTER_REPLY_SECONDS = 0.05


class AgentSupervisor:
    """Starts, start failures, per-conversation locks and leases of this process's agents."""

    def __init__(
        self,
        runtime: AgentRuntime,
        sink: EventSink,
        hub: Hub,
        system_prompt: str,
        faults: Faults | None = None,
        ownership: Ownership | None = None,
    ) -> None:
        self.runtime = runtime
        self.ownership = ownership or Ownership()
        self._sink = sink  # where an agent that cannot start is reported 'unavailable'
        self._hub = hub
        self._system_prompt = system_prompt
        self._faults = faults or Faults()
        self._starts: dict[uuid.UUID, StartInfo] = {}
        self._start_failures: dict[uuid.UUID, str] = {}  # what the panel says when the agent cannot start
        self._locks: dict[uuid.UUID, asyncio.Lock] = {}  # one start (or hand-over) at a time
        self._stopping: dict[uuid.UUID, asyncio.Task[None]] = {}  # stop_soon's, until the lease is released

    def start_failure(self, conversation_id: uuid.UUID) -> str:
        """Why the conversation's agent could not start, as the chat panel says it."""
        return self._start_failures.get(conversation_id, DEFAULT_START_FAILURE)

    async def ensure(
        self,
        conversation: queries.Conversation,
        display_name: str,
        utterances: Sequence[queries.StoredUtterance] | None = None,
    ) -> StartInfo | None:
        """Start the conversation's agent unless it runs here or in another live app process; None (and an
        'unavailable' status) when it cannot."""
        if (start := self._running(conversation.id)) is not None:
            return start
        async with self._lock(conversation.id):
            return await self._start(conversation, display_name, utterances)

    async def send_text(self, conversation_id: uuid.UUID, text: str) -> None:
        """Typed text (already stored) for the conversation's agent: here, in the live process that runs it, or
        else a new agent here, which answers it as the conversation's last message."""
        if self.runtime.is_running(conversation_id) or not self.runtime.answers_typed_text:
            await self.runtime.send_text(conversation_id, text)
            return
        async with self._lock(conversation_id):
            if self.runtime.is_running(conversation_id):
                await self.runtime.send_text(conversation_id, text)
            elif (holder := await self.ownership.holder_elsewhere(conversation_id)) is not None:
                await self._hub.publish(AgentText(conversation_id=conversation_id, to=holder, text=text))
            elif (conversation := await queries.get_conversation(conversation_id)) is not None and conversation.active:
                await self._start(conversation, "", None)

    async def interrupt(self, conversation_id: uuid.UUID) -> None:
        """Cut the agent's current reply, wherever its agent runs. Nothing to stop is fine."""
        if self.runtime.is_running(conversation_id) or not self.runtime.answers_typed_text:
            await self.runtime.interrupt(conversation_id)
        elif (holder := await self.ownership.holder_elsewhere(conversation_id)) is not None:
            await self._hub.publish(AgentInterrupt(conversation_id=conversation_id, to=holder))

    async def retry(self, conversation_id: uuid.UUID) -> None:
        """Retry: replace the agent's last reply with a new one, where the agent runs (here, or in the live app
        process that runs it, which is sent the command), else here."""
        if not self.runtime.is_running(conversation_id):
            holder = await self.ownership.holder_elsewhere(conversation_id)
            if holder is not None:
                await self._hub.publish(AgentRetry(conversation_id=conversation_id, to=holder))
                return
        await self.retry_local(conversation_id)

    async def retry_local(self, conversation_id: uuid.UUID) -> None:
        """Retry, on this process: stop the agent (a reply under way ends as it stands), mark its replies since
        the user's last message superseded (kept, shown as replaced in every tab), and start it again on the
        transcript without them, so it answers that message anew."""
        async with self._lock(conversation_id):
            await self.runtime.stop(conversation_id)
            self._starts.pop(conversation_id, None)
            superseded = await queries.supersede_last_reply(conversation_id)
            await self._hub.publish_many([final_event(u) for u in superseded])
            conversation = await queries.get_conversation(conversation_id)
            if conversation is not None and conversation.active:
                await self._start(conversation, "", None)

    def forget(self, conversation_id: uuid.UUID) -> None:
        """The conversation ended: its start, start failure and lock are no longer anyone's business."""
        self._starts.pop(conversation_id, None)
        self._start_failures.pop(conversation_id, None)
        self._locks.pop(conversation_id, None)

    async def stop(self, conversation_id: uuid.UUID) -> None:
        """The conversation ended here: stop its agent and give up its lease."""
        await self.runtime.stop(conversation_id)
        await self.ownership.release(conversation_id)

    async def stop_soon(self, conversation_id: uuid.UUID) -> None:
        """stop(), with the request that ended the conversation not waiting for the agent to wind down (its
        session's close, its unfinished reply reported as interrupted: stored as a late final, which the save
        accepts) nor for the lease's release. The agent is not running here from this call on; a new start of the
        same conversation (reopened at once) waits until both are done; shutdown waits for them (wait_stopped).
        The agent winds down STOP_AFTER_REPLY_SECONDS later, after the reply has gone out.
        A runtime that cannot detach its agent at once (LiveKit's, whose stop is quick) is stopped here."""
        detach = getattr(self.runtime, "detach", None)
        if detach is None:
            await self.stop(conversation_id)
            return
        closing = detach(conversation_id, STOP_AFTER_REPLY_SECONDS)
        task = asyncio.create_task(self._finish_stop(conversation_id, closing))
        self._stopping[conversation_id] = task
        task.add_done_callback(lambda done: self._stop_done(conversation_id, done))

    async def _finish_stop(self, conversation_id: uuid.UUID, closing: Awaitable[None]) -> None:
        try:
            await closing
        except Exception:  # the save stands whatever the agent does on its way out
            log.exception("stopping the agent of conversation %s failed", conversation_id)
        await self.ownership.release(conversation_id)

    def _stop_done(self, conversation_id: uuid.UUID, task: asyncio.Task[None]) -> None:
        if self._stopping.get(conversation_id) is task:
            del self._stopping[conversation_id]
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("releasing the agent lease of conversation %s failed: %s", conversation_id, type(error).__name__)

    async def stopped(self, conversation_id: uuid.UUID) -> None:
        """Until stop_soon's stop of this conversation's agent (if any) is done: a transaction that locks the
        saved conversation after the user (reopen, continue) must not run while its agent's last final is being
        stored, which locks them the other way round."""
        if (stopping := self._stopping.get(conversation_id)) is not None:
            await asyncio.wait([stopping])

    async def wait_stopped(self) -> None:
        """Shutdown: the agents stop_soon is still stopping have stopped and their leases are released."""
        while self._stopping:
            await asyncio.wait(list(self._stopping.values()))

    # What the lease keeper and the command router ask of this process (ownership.LocalAgents).

    async def adopt(self, conversation_id: uuid.UUID) -> None:
        """Take over the agent of an active conversation whose process died (the lease decides who)."""
        conversation = await queries.get_conversation(conversation_id)
        if conversation is not None and conversation.active:
            await self.ensure(conversation, "")

    async def interrupt_local(self, conversation_id: uuid.UUID) -> None:
        """Stop handed over by another process, for this process's agent."""
        await self.runtime.interrupt(conversation_id)

    async def deliver_local_text(self, conversation_id: uuid.UUID, text: str) -> None:
        """Typed text handed over by another process: for this process's agent (if it is still here)."""
        async with self._lock(conversation_id):
            if self.runtime.is_running(conversation_id):
                await self.runtime.send_text(conversation_id, text)
            else:
                log.warning("handed-over text for conversation %s found no agent here", conversation_id)

    async def fence(self, conversation_id: uuid.UUID) -> None:
        """Another process holds the conversation's lease now: this process's agent stops, and what it has not
        written yet is dropped."""
        self._starts.pop(conversation_id, None)
        await getattr(self.runtime, "fence", self.runtime.stop)(conversation_id)

    def hold(self, conversation_id: uuid.UUID, held: bool) -> None:
        """Hold the agent's live output while its lease is unconfirmed (ownership.fence_overdue), or let it go on."""
        if (hold := getattr(self.runtime, "hold", None)) is not None:
            hold(conversation_id, held)

    async def ended_elsewhere(self, conversation_id: uuid.UUID) -> None:
        """Another process ended the conversation: stop its agent if it runs here, and forget it."""
        self.forget(conversation_id)
        await self.runtime.stop(conversation_id)  # idempotent, and waits for a start still in progress

    def _running(self, conversation_id: uuid.UUID) -> StartInfo | None:
        if self.runtime.is_running(conversation_id):
            return self._starts.get(conversation_id)
        return None

    def _lock(self, conversation_id: uuid.UUID) -> asyncio.Lock:
        return self._locks.setdefault(conversation_id, asyncio.Lock())

    async def _start(
        self,
        conversation: queries.Conversation,
        display_name: str,
        utterances: Sequence[queries.StoredUtterance] | None,
    ) -> StartInfo | None:
        """ensure's work, under the conversation's lock."""
        await self.stopped(conversation.id)  # its previous agent first winds down and gives up the lease
        if (start := self._running(conversation.id)) is not None:
            return start
        if not await self.ownership.claim(conversation.id):
            return StartInfo(mode="text")  # another live process runs it; typed text is handed over to it
        info = await self._agent_info(conversation, display_name, utterances)
        try:
            self._faults.check("agent_start")
            start = await self.runtime.start(info)
        except (AgentStartError, InjectedFault) as exc:
            log.warning("agent for conversation %s could not start: %s", conversation.id, type(exc).__name__)
            detail = exc.detail if isinstance(exc, AgentStartError) else DEFAULT_START_FAILURE
            self._start_failures[conversation.id] = detail
            await self.ownership.release(conversation.id, only_mine=True)
            await self._sink.agent_state(AgentStateEvent(conversation.id, "unavailable", detail))
            return None
        self._start_failures.pop(conversation.id, None)
        self._starts[conversation.id] = start
        return start

    async def _agent_info(
        self,
        conversation: queries.Conversation,
        display_name: str,
        utterances: Sequence[queries.StoredUtterance] | None,
    ) -> ConversationInfo:
        """What the agent is told: the conversation's transcript as history, and whether to answer its last turn."""
        if utterances is None:
            utterances = await queries.list_utterances(conversation.id)
        # A user message stored while no agent ran (its process died, the app restarted) is answered now.
        utterances = [u for u in utterances if not u.superseded]  # replies replaced by Retry are not context
        # ... but not a reopened conversation's old last message: that was left unanswered before it was saved.
        answer_last = (
            bool(utterances) and utterances[-1].role == "user" and utterances[-1].seq > conversation.reopened_after_seq
        )
        history = [(u.role, u.text) for u in utterances]
        if conversation.continued_from is not None:
            # Continuing a saved conversation: the agent's context is its transcript (which stays as it was)
            # and then what was said since, also when the agent is started again later.
            earlier = await queries.list_utterances(conversation.continued_from)
            history = [(u.role, u.text) for u in earlier if not u.superseded] + history
        return ConversationInfo(
            id=conversation.id,
            room_name=conversation.room_name,
            system_prompt=conversation.system_prompt or self._system_prompt,
            user_display_name=display_name,
            user_id=conversation.owner,
            history=tuple(history),
            answer_last=answer_last,
            period=conversation.period,
            lease=self.ownership.generation(conversation.id),
        )
