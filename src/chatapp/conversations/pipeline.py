"""The transcript pipeline: every producer's events go through `apply()`, and nothing else writes utterances.

A final is committed before anyone is told about it; interims are only buffered and broadcast.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence

from chatapp.conversations import queries
from chatapp.conversations.buffer import TranscriptBuffer
from chatapp.conversations.events import AgentStateEvent, TranscriptEvent
from chatapp.conversations.hub import Hub, seq_template
from chatapp.conversations.live_events import Final, Interim, LiveEvent, State
from chatapp.core import metrics
from chatapp.core.database import connection

# Interims mark activity for the idle reaper, but at most this often per conversation (they come per word).
_TOUCH_INTERVAL = 30.0


def final_event(utterance: queries.StoredUtterance) -> Final:
    return Final(
        conversation_id=utterance.conversation_id,
        seq=utterance.seq,
        item_id=utterance.item_id,
        role=utterance.role,
        text=utterance.text,
        interrupted=utterance.interrupted,
        created_at=utterance.created_at,
        late=utterance.completed_late or utterance.superseded,
        superseded=utterance.superseded,
    )


def _unnumbered(event: TranscriptEvent) -> queries.StoredUtterance:
    """A final as it will be stored, its seq not known yet (hub.seq_template puts it in the payload)."""
    return queries.StoredUtterance(
        event.conversation_id, 0, event.item_id, event.role, event.text, event.interrupted, event.timestamp
    )


class TranscriptPipeline:
    """The app's EventSink: runtimes, the ingest endpoint and the chat form all report here."""

    def __init__(self, buffer: TranscriptBuffer, hub: Hub) -> None:
        self.buffer = buffer
        self.hub = hub
        self._touched: dict[uuid.UUID, float] = {}
        # Told (without waiting) about every batch of newly stored finals: the model's titles start from here.
        self.on_stored: Callable[[uuid.UUID, Sequence[queries.StoredUtterance]], None] | None = None

    async def transcript(self, event: TranscriptEvent) -> None:
        await self.apply(event.conversation_id, [event])

    async def apply(
        self,
        conversation_id: uuid.UUID,
        events: Sequence[TranscriptEvent],
        late_grace: float | None = None,
        source: str = "app",
    ) -> list[queries.StoredUtterance]:
        """Store the finals (one transaction), then broadcast. Raises queries.UnknownConversation, queries.LeaseLost
        (an agent's finals after a takeover), and (with `late_grace`, see queries.store_finals)
        queries.ConversationClosed. `source` labels the events' metric."""
        finals = [e for e in events if e.final]
        stored: list[queries.StoredUtterance] = []
        if finals:
            leases = {e.lease for e in finals if e.lease is not None}
            async with connection() as conn, conn.transaction():
                stored = await queries.store_finals(conn, conversation_id, finals, late_grace)
                # An agent's finals stand only while its lease is still the one it started under (else all roll
                # back). Checked after store_finals has locked the conversation: ending one (which deletes its
                # lease) locks in the same order.
                for lease in leases:
                    await queries.check_lease(conn, conversation_id, lease)
        await self._after_store(conversation_id, events, finals, stored, source)
        return stored

    async def ingest(
        self, conversation_id: uuid.UUID, events: Sequence[TranscriptEvent], period: int
    ) -> queries.OpenFinals | None:
        """The ingest API's usual case, in one round trip: an agent's finals for the current `period` of an open
        conversation, stored and their events sent in one autocommitted statement (queries.store_open_finals),
        then the batch's interims as `apply` handles them. None, with nothing written or sent, when the events
        need `apply` (and the service's checks before it): no finals, an ended, deleted or unknown
        conversation, another period, a late completion of an interrupted utterance, a concurrent delivery."""
        finals = [e for e in events if e.final]
        if not finals or any(e.lease is not None for e in finals):
            return None
        unique: dict[str, TranscriptEvent] = {}
        for event in finals:
            unique.setdefault(event.item_id, event)
        fresh = list(unique.values())
        channel = self.hub.channel_in_sql
        payloads = [seq_template(final_event(_unnumbered(e))) for e in fresh] if channel else []
        if any(payload is None for payload in payloads):  # a final too large for one NOTIFY: sent after, in parts
            channel, payloads = None, []
        written = await queries.store_open_finals(
            conversation_id, period, fresh, channel, [p for p in payloads if p is not None]
        )
        if written is not None:
            await self._after_store(conversation_id, events, finals, written.stored, "api", sent=channel is not None)
        return written

    async def _after_store(
        self,
        conversation_id: uuid.UUID,
        events: Sequence[TranscriptEvent],
        finals: Sequence[TranscriptEvent],
        stored: list[queries.StoredUtterance],
        source: str,
        *,
        sent: bool = False,
    ) -> None:
        """After the finals' commit: the buffer, the metrics, and the events (the finals' unless `sent` already)."""
        for event in finals:
            self.buffer.finish(conversation_id, event.item_id)
        fresh_interims = [e for e in events if not e.final and self.buffer.apply_interim(e)]
        metrics.count_events(source, "final", len(stored), len(finals) - len(stored))
        metrics.count_events(source, "interim", len(fresh_interims), len(events) - len(finals) - len(fresh_interims))
        # NOTIFY happens here, after the commit (apply's transaction takes several round trips, and notifying
        # inside it would hold PostgreSQL's notify lock, which serialises commits, across them). All of this
        # request's events go in one round trip, finals first (in seq order), as before.
        live: list[LiveEvent] = [] if sent else [final_event(u) for u in stored]
        live += [Interim.of(e) for e in fresh_interims]
        await self.hub.publish_many(live)
        if stored and self.on_stored is not None:
            self.on_stored(conversation_id, stored)
        if fresh_interims and not finals:
            await self._touch(conversation_id)

    def forget(self, conversation_id: uuid.UUID) -> None:
        """The conversation ended: drop what is kept in memory for it (late finals are still stored)."""
        self.buffer.forget(conversation_id)
        self._touched.pop(conversation_id, None)

    async def agent_state(self, event: AgentStateEvent) -> None:
        await self.hub.publish(State(conversation_id=event.conversation_id, state=event.state, detail=event.detail))

    async def _touch(self, conversation_id: uuid.UUID) -> None:
        now = time.monotonic()
        if now - self._touched.get(conversation_id, 0.0) >= _TOUCH_INTERVAL:
            self._touched[conversation_id] = now
            await queries.touch(conversation_id)
