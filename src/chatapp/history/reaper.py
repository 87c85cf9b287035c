"""The idle reaper: a conversation nobody has touched for CHATAPP_IDLE_MINUTES is ended exactly as New Chat
would end it (saved if the user spoke, deleted if not, agent stopped), so nothing abandoned is lost.

Every app process runs one; they cannot double-save because ending is serialised per user in the database
and names the conversation it ends.
"""

from __future__ import annotations

import asyncio
import logging

from chatapp.accounts.store import PostgresStore
from chatapp.conversations.service import ConversationService
from chatapp.database import connection

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
        # Still idle? A message may have arrived since the scan; end() re-checks nothing about activity,
        # so look once more right before ending.
        async with connection() as conn:
            still_idle = await conn.fetchval(
                """
                SELECT true FROM chat_session WHERE id = $1 AND ended_at IS NULL
                  AND last_activity_at < now() - make_interval(secs => $2)
                """,
                row["id"],
                idle_minutes * 60,
            )
        if not still_idle:
            continue
        result = await service.end(row["owner"], "", row["id"], "idle", start_next=False)
        ended += int(result.outcome.changed)
    return ended


async def run_reaper(
    service: ConversationService, idle_minutes: float, interval: float, sessions: PostgresStore
) -> None:
    """Reap forever (until cancelled), never letting one failure stop the loop."""
    while True:
        try:
            ended = await reap_idle(service, idle_minutes)
            if ended:
                log.info("idle reaper ended %d conversation(s)", ended)
            await sessions.delete_expired()
        except asyncio.CancelledError:
            raise
        except Exception:  # the database may be briefly down; try again next round
            log.exception("idle reaper round failed")
        await asyncio.sleep(interval)
