"""TranscriptBuffer: per active conversation, the latest interim text of every utterance still in progress.

Finals are durable in PostgreSQL; interims live only here (in every process: the hub feeds interims
published by other processes in too) and on the wire. New Chat flushes what is left as interrupted finals.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict

from chatapp.conversations.events import TranscriptEvent

# Remember this many finished item ids per conversation, to drop an interim that arrives after its final.
_FINISHED_MEMORY = 256
# ... and this many ended conversations, whose late interims are dropped (their late finals are stored).
_CLOSED_MEMORY = 10_000


class TranscriptBuffer:
    def __init__(self) -> None:
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
        items[event.item_id] = event
        return True

    def finish(self, conversation_id: uuid.UUID, item_id: str) -> None:
        """A final for `item_id` is stored: its interim is no longer pending."""
        items = self._interims.get(conversation_id)
        if items is not None:
            items.pop(item_id, None)
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
        self._interims.pop(conversation_id, None)
        self._finished.pop(conversation_id, None)
        self._closed[conversation_id] = None
        while len(self._closed) > _CLOSED_MEMORY:
            self._closed.popitem(last=False)

    def conversations(self) -> list[uuid.UUID]:
        return list(self._interims)
