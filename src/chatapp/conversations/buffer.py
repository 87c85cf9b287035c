"""TranscriptBuffer: per active conversation, the latest interim text of every utterance still in progress.

Finals are durable in PostgreSQL; interims live only here (in every process: the hub feeds interims
published by other processes in too) and on the wire. New Chat flushes what is left as interrupted finals.
"""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict

from chatapp.conversations.events import TranscriptEvent

# Remember this many finished item ids per conversation, to drop an interim that arrives after its final.
_FINISHED_MEMORY = 256
# ... and this many ended conversations, whose late interims are dropped (their late finals are stored).
_CLOSED_MEMORY = 10_000
# A person has one or two utterances in progress; a flood of distinct item ids must not grow memory without end.
MAX_PENDING_PER_CONVERSATION = 32
MAX_PENDING_TOTAL = 20_000

log = logging.getLogger(__name__)


class TranscriptBuffer:
    """Bounded: past `max_per_conversation` pending items the oldest is dropped; past `max_total` (all
    conversations) new items are refused. Either way with one warning, and without the text."""

    def __init__(
        self, max_per_conversation: int = MAX_PENDING_PER_CONVERSATION, max_total: int = MAX_PENDING_TOTAL
    ) -> None:
        self.max_per_conversation = max_per_conversation
        self.max_total = max_total
        self._total = 0
        self._warned: set[uuid.UUID] = set()
        self._interims: dict[uuid.UUID, dict[str, TranscriptEvent]] = {}
        self._finished: dict[uuid.UUID, OrderedDict[str, None]] = {}
        self._closed: OrderedDict[uuid.UUID, None] = OrderedDict()

    def apply_interim(self, event: TranscriptEvent) -> bool:
        """Keep the newest interim per item; False when it is stale (older, or its final already came)."""
        if event.conversation_id in self._closed or event.item_id in self._finished.get(event.conversation_id, ()):
            return False
        items = self._interims.setdefault(event.conversation_id, {})
        current = items.get(event.item_id)
        if current is not None and current.timestamp > event.timestamp:
            return False
        if current is None:
            if self._total >= self.max_total:
                self._warn_once(event.conversation_id, "interim buffer full: refusing new interims")
                if not items:
                    del self._interims[event.conversation_id]
                return False
            if len(items) >= self.max_per_conversation:
                self._warn_once(event.conversation_id, "too many interims in one conversation: dropping the oldest")
                del items[next(iter(items))]  # insertion order: the utterance that started first
                self._total -= 1
            self._total += 1
        items[event.item_id] = event
        return True

    def _warn_once(self, conversation_id: uuid.UUID, message: str) -> None:
        if conversation_id not in self._warned:
            self._warned.add(conversation_id)
            log.warning("%s (conversation %s)", message, conversation_id)

    def finish(self, conversation_id: uuid.UUID, item_id: str) -> None:
        """A final for `item_id` is stored: its interim is no longer pending."""
        items = self._interims.get(conversation_id)
        if items is not None:
            if items.pop(item_id, None) is not None:
                self._total -= 1
            if not items:
                del self._interims[conversation_id]
        finished = self._finished.setdefault(conversation_id, OrderedDict())
        finished[item_id] = None
        while len(finished) > _FINISHED_MEMORY:
            finished.popitem(last=False)

    def pending(self, conversation_id: uuid.UUID) -> list[TranscriptEvent]:
        """Interims not yet finalised, oldest first."""
        return sorted(self._interims.get(conversation_id, {}).values(), key=lambda e: e.timestamp)

    def forget(self, conversation_id: uuid.UUID) -> None:
        """The conversation ended: drop its interims (already flushed) and refuse any that come late."""
        self._total -= len(self._interims.pop(conversation_id, {}))
        self._finished.pop(conversation_id, None)
        self._warned.discard(conversation_id)
        self._closed[conversation_id] = None
        while len(self._closed) > _CLOSED_MEMORY:
            self._closed.popitem(last=False)

    def reopen(self, conversation_id: uuid.UUID) -> None:
        """The ended conversation is active again (reopened): its interims are taken again."""
        self._closed.pop(conversation_id, None)

    def conversations(self) -> list[uuid.UUID]:
        return list(self._interims)

    def total(self) -> int:
        """Pending interims across all conversations."""
        return self._total
