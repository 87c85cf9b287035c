"""Deletes that can be undone: a deleted conversation is hidden at once, restorable for CHATAPP_DELETE_UNDO_SECONDS,
then purged for good (utterances, share links and search document with it).

Each delete schedules a purge for when its window ends, in this process; the idle reaper's rounds also purge
whatever is past its window (every process, every round), so a purge that failed, or never ran because its process
stopped or the database was down, happens a round later instead of never.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from chatapp.conversations import queries
from chatapp.core.database import OUTAGE_ERRORS
from chatapp.core.faults import Faults
from chatapp.history import service

log = logging.getLogger(__name__)

# The purge runs this long after the window, so the database clock (which judges the window) has passed it too.
PURGE_SLACK_SECONDS = 0.5


class Deletions:
    """This process's deletes: marking, undoing, and purging when due."""

    def __init__(self, window: float, faults: Faults | None = None) -> None:
        self.window = window
        self.faults = faults or Faults()
        self._timers: set[asyncio.Task[int]] = set()

    async def delete(self, owner: uuid.UUID, conversation_id: uuid.UUID) -> queries.Conversation | None:
        """Delete (restorable for the window); None when there is no such saved conversation of the owner's."""
        deleted = await service.delete(owner, conversation_id)
        if deleted is not None:
            timer = asyncio.create_task(self._purge_later(), name="chatapp-purge-deleted")
            self._timers.add(timer)
            timer.add_done_callback(self._timers.discard)
        return deleted

    async def undo(self, owner: uuid.UUID, conversation_id: uuid.UUID) -> queries.Conversation:
        """Restore within the window; NothingToRestore when not the owner's deleted one, UndoExpired after it."""
        return await service.undo_delete(owner, conversation_id, self.window)

    async def purge(self) -> int:
        """Purge everything past its window; a failure is logged (its type only) and left to the next round."""
        try:
            self.faults.check("purge")
            purged = await service.purge_deleted(self.window)
        except Exception as exc:
            kind = "database unavailable" if isinstance(exc, OUTAGE_ERRORS) else "failed"
            log.warning("purging deleted conversations %s (%s); the next round retries", kind, type(exc).__name__)
            return 0
        if purged:
            log.info("purged %d deleted conversation(s)", purged)
        return purged

    async def _purge_later(self) -> int:
        await asyncio.sleep(self.window + PURGE_SLACK_SECONDS)
        return await self.purge()

    async def aclose(self) -> None:
        """Stop the timers (shutdown): what they would have purged, the next process's sweep purges."""
        for timer in list(self._timers):
            timer.cancel()
        for timer in list(self._timers):
            with contextlib.suppress(asyncio.CancelledError):
                await timer
