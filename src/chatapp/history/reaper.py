"""The idle reaper: a conversation nobody has touched for CHATAPP_IDLE_MINUTES is ended exactly as New Chat
would end it (saved if the user spoke, deleted if not, agent stopped), so nothing abandoned is lost.

Every app process runs one; they cannot double-save because ending is serialised per user in the database
and names the conversation it ends.
"""

from __future__ import annotations

import asyncio
import logging

from chatapp.accounts.session_store import PostgresStore
from chatapp.conversations.service import ConversationService
from chatapp.core import metrics
from chatapp.core.database import OUTAGE_ERRORS, connection
from chatapp.history.deletion import Deletions

log = logging.getLogger(__name__)

BATCH = 100


async def reap_idle(service: ConversationService, idle_minutes: float) -> int:
    """End every active conversation idle for longer than `idle_minutes`; return how many this call ended."""
    async with connection() as conn:
        rows = await conn.fetch(
            """
            SELECT id, owner FROM chat_session
            WHERE ended_at IS NULL AND last_activity_at < now() - make_interval(secs => $1)
            ORDER BY last_activity_at LIMIT $2
            """,
            idle_minutes * 60,
            BATCH,
        )
    ended = 0
    for row in rows:
        # Still idle? A message may have arrived since the scan: end() re-checks under the per-user lock.
        try:
            result = await service.end(row["owner"], row["id"], "idle", idle_seconds=idle_minutes * 60)
        except OUTAGE_ERRORS:
            raise  # the database is down: every other row would fail the same way
        except Exception as exc:  # one conversation that cannot be saved must not stop everyone else's
            # The type only: exception messages can quote transcript text.
            log.warning("idle reaper could not end conversation %s: %s", row["id"], type(exc).__name__)
            metrics.REAPER_ACTIONS.labels("failed").inc()
            continue
        ended += int(result.outcome.changed)
    metrics.REAPER_ACTIONS.labels("ended").inc(ended)
    return ended


async def reap_round(
    service: ConversationService, idle_minutes: float, sessions: PostgresStore, deletions: Deletions | None = None
) -> None:
    """One round: end idle conversations, then delete expired login sessions and purge deleted conversations past
    their undo window, each whatever happened to the others."""
    try:
        ended = await reap_idle(service, idle_minutes)
        if ended:
            log.info("idle reaper ended %d conversation(s)", ended)
    except Exception as exc:  # the database may be briefly down; try again next round
        _round_failed("idle conversations", exc)
    try:
        metrics.REAPER_ACTIONS.labels("sessions_deleted").inc(await sessions.delete_expired())
    except Exception as exc:
        _round_failed("expired sessions", exc)
    if deletions is not None:
        await deletions.purge()  # logs its own failure; retried next round


def _round_failed(step: str, exc: Exception) -> None:
    # One line with the type only: an outage would repeat a traceback every round, and messages can quote text.
    if isinstance(exc, OUTAGE_ERRORS):
        log.warning("idle reaper skipped %s: database unavailable (%s)", step, type(exc).__name__)
    else:
        log.error("idle reaper failed on %s: %s", step, type(exc).__name__)


async def run_reaper(
    service: ConversationService,
    idle_minutes: float,
    interval: float,
    sessions: PostgresStore,
    deletions: Deletions | None = None,
) -> None:
    """Reap forever (until cancelled), never letting one failure stop the loop."""
    while True:
        await reap_round(service, idle_minutes, sessions, deletions)
        await asyncio.sleep(interval)
