"""The per-user cap on open live streams (CHATAPP_MAX_STREAMS_PER_USER), exact across app processes.

Each open stream holds a row in `stream_slot`. Opening one counts the user's live slots and inserts a new one
in one transaction under a per-user advisory lock, so opens racing on several processes cannot overshoot;
closing deletes it. A process renews the leases of its open streams every RENEW_SECONDS, so the slots of a
process that died (or of a delete lost to an outage) expire by themselves after LEASE_SECONDS. A transaction
advisory lock, not a session one: it works through pgbouncer's transaction pooling.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from chatapp.conversations.hub import PROCESS_ID
from chatapp.core.database import OutageNotice, connection, is_outage

log = logging.getLogger(__name__)

LEASE_SECONDS = 30.0
RENEW_SECONDS = 10.0

LOCK_USER_SLOTS_SQL = "SELECT pg_advisory_xact_lock(hashtextextended('stream-slots:' || $1::uuid::text, 0))"
TAKE_SLOT_SQL = """
INSERT INTO stream_slot (id, owner, holder, expires_at)
SELECT $2, $1, $3, now() + make_interval(secs => $5)
WHERE (SELECT count(*) FROM stream_slot WHERE owner = $1 AND expires_at > now()) < $4
RETURNING id
"""
RELEASE_SLOT_SQL = "DELETE FROM stream_slot WHERE id = $1"
RENEW_SLOTS_SQL = "UPDATE stream_slot SET expires_at = now() + make_interval(secs => $2) WHERE id = ANY($1::uuid[])"
FORGET_EXPIRED_SQL = "DELETE FROM stream_slot WHERE expires_at < now()"


class StreamSlots:
    """This process's open streams' slots: taken at admission, held while the stream runs, renewed meanwhile."""

    def __init__(self, lease_seconds: float = LEASE_SECONDS) -> None:
        self.lease_seconds = lease_seconds
        self._held: set[uuid.UUID] = set()
        self._releasing: set[asyncio.Task[None]] = set()

    async def take(self, user_id: uuid.UUID, limit: int) -> uuid.UUID | None:
        """A slot for one more stream of this user, or None when `limit` are open (in any process)."""
        async with connection() as conn, conn.transaction():
            await conn.execute(LOCK_USER_SLOTS_SQL, user_id)
            slot: uuid.UUID | None = await conn.fetchval(
                TAKE_SLOT_SQL, user_id, uuid.uuid4(), PROCESS_ID, limit, self.lease_seconds
            )
        return slot

    def hold(self, slot: uuid.UUID) -> None:
        """For the life of a stream: its slot is renewed until `release`."""
        self._held.add(slot)

    def release(self, slot: uuid.UUID) -> None:
        """The stream ended: give its slot back. In a task of its own: a stream ends by being closed or cancelled
        (its client left), and an await here would be cancelled with it."""
        self._held.discard(slot)
        release = asyncio.create_task(self._release(slot), name="chatapp-stream-slot-release")
        self._releasing.add(release)
        release.add_done_callback(self._releasing.discard)

    async def _release(self, slot: uuid.UUID) -> None:
        try:
            async with connection() as conn:
                await conn.execute(RELEASE_SLOT_SQL, slot)
        except Exception as exc:  # its lease runs out without renewals
            if not is_outage(exc):
                log.exception("could not give back a stream slot")

    async def keep(self, interval: float = RENEW_SECONDS) -> None:
        """For the life of the app: renew the leases of this process's open streams, forget expired slots."""
        outage = OutageNotice(log, "stream slots")
        while True:
            await asyncio.sleep(interval)
            try:
                async with connection() as conn:
                    if self._held:
                        await conn.execute(RENEW_SLOTS_SQL, list(self._held), self.lease_seconds)
                    await conn.execute(FORGET_EXPIRED_SQL)
                outage.recovered()
            except Exception as exc:
                if is_outage(exc):
                    outage.failed(exc)
                else:
                    log.exception("renewing stream slots failed")
