"""Which app process runs each active conversation's in-process agent: exactly one, whichever process serves.

With one process (memory channels) every agent is this process's and nothing is stored. With several
(postgres or redis channels) ownership is a lease row in `agent_lease`: the holder renews it every HEARTBEAT_SECONDS;
a lease that ran out (its process was killed) is taken over by another process, whose agent gets the stored
transcript as history and answers a user message that was left unanswered. A lease table rather than an
advisory lock: it can be read by any process (who owns this?), is easy to observe, and works through
pgbouncer's transaction pooling, where a session-level lock would need its own dedicated connection.

Fencing: a process cut off from the database (its host's link down) still runs its agents. Once it has not
renewed a lease for FENCE_SECONDS, judged by its own clock from when it sent the last renewal that succeeded
(the database's expiry is at least LEASE_SECONDS after that), the agent is held: it says nothing live (no
interims, no status) before the lease can expire and another process take it over, and its finals are written
only under its lease. Each claim of an expired lease gets a new generation, which the agent's finals carry and
the write checks (queries.check_lease, under a row lock the takeover's claim waits for): whatever was still on
its way when the host comes back is refused, and the agent is stopped with its output dropped. If the lease
turns out to be still its own (the database itself was away: nobody could take over), the agent goes on and
its finals are stored, as after any outage.

Commands for an agent that runs elsewhere travel over the hub's channel: typed text as an `AgentText` event
addressed to the holder, the Stop button as `AgentInterrupt`; stopping rides on the `Ended` event every
process already receives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Coroutine, Iterable
from typing import Any, Protocol

import asyncpg

from chatapp.conversations.agent_runtime import AgentRuntime
from chatapp.conversations.hub import PROCESS_ID
from chatapp.conversations.live_events import AgentInterrupt, AgentRetry, AgentText, Command, Ended
from chatapp.core.database import OutageNotice, connection, is_outage

log = logging.getLogger(__name__)

LEASE_SECONDS = 3.0
HEARTBEAT_SECONDS = 1.0
FENCE_SECONDS = 2.0  # < LEASE_SECONDS: an agent not renewed this long is held, before its lease can expire
FENCE_CHECK_SECONDS = 0.1
ADOPT_BATCH = 20

# Committed without waiting for the WAL flush (as the rate-limit counters are): a claim comes with every agent start,
# New Chat's included, and a flush is milliseconds on a busy disk. Visible to every process at once all the same;
# only a PostgreSQL crash in the next fraction of a second can forget it, and then this process's next renewal
# finds the lease gone and stops its agent (fencing holds), as after any lost lease.
CLAIM = """
INSERT INTO agent_lease (conversation, holder, expires_at)
SELECT $1, $2, now() + make_interval(secs => $3)
FROM (SELECT set_config('synchronous_commit', 'off', true)) AS leases_need_no_flush
ON CONFLICT (conversation) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at,
    generation = CASE WHEN agent_lease.holder = EXCLUDED.holder AND agent_lease.expires_at >= now()
                      THEN agent_lease.generation ELSE nextval('agent_lease_generation') END
WHERE agent_lease.holder = EXCLUDED.holder OR agent_lease.expires_at < now()
RETURNING holder, generation
"""
HOLDER_ELSEWHERE = "SELECT holder FROM agent_lease WHERE conversation = $1 AND holder <> $2 AND expires_at > now()"
RENEW = """
UPDATE agent_lease SET expires_at = now() + make_interval(secs => $3)
WHERE holder = $1 AND conversation = ANY($2::uuid[]) RETURNING conversation
"""
# (Renewing a lease of ours that expired but was not taken is safe: its generation is unchanged, nobody acted.)
ORPHANS = """
SELECT l.conversation FROM agent_lease l JOIN chat_session s ON s.id = l.conversation AND s.ended_at IS NULL
WHERE l.expires_at < now() ORDER BY l.expires_at LIMIT $1
"""
RELEASE = "DELETE FROM agent_lease WHERE conversation = $1"
RELEASE_MINE = "DELETE FROM agent_lease WHERE conversation = $1 AND holder = $2"
# On a clean shutdown: expire our leases now, so the other processes take the agents over at once.
EXPIRE_MINE = "UPDATE agent_lease SET expires_at = now() - interval '1 second' WHERE holder = $1"


class Ownership:
    """One app process: every agent is this process's; nothing to store, nothing to hand over."""

    distributed = False
    holder = PROCESS_ID

    async def claim(self, conversation_id: uuid.UUID) -> bool:
        """True when this process should run the agent (and now holds its lease)."""
        return True

    def generation(self, conversation_id: uuid.UUID) -> int | None:
        """The generation of this process's lease of the conversation (None: no leases, one process)."""
        return None

    def overdue(self, running: Iterable[uuid.UUID]) -> set[uuid.UUID]:
        """Those of `running` whose lease this process has not renewed for FENCE_SECONDS: hold their output."""
        return set()

    async def holder_elsewhere(self, conversation_id: uuid.UUID) -> str | None:
        """The live process (not this one) running the agent, if any."""
        return None

    async def release(self, conversation_id: uuid.UUID, *, only_mine: bool = False) -> None:
        """The conversation ended (or its agent failed to start here): forget who runs it."""

    async def renew(self, running: Iterable[uuid.UUID]) -> set[uuid.UUID]:
        """Extend this process's leases of `running`; returns those still ours."""
        return set(running)

    async def orphans(self) -> list[uuid.UUID]:
        """Active conversations whose agent's process died."""
        return []

    async def close(self) -> None:
        """This process is stopping: let the others take its agents over."""


class LeaseOwnership(Ownership):
    """Ownership across app processes, as lease rows judged by the database's clock."""

    distributed = True

    def __init__(self, lease_seconds: float = LEASE_SECONDS, fence_seconds: float = FENCE_SECONDS) -> None:
        self.lease_seconds = lease_seconds
        self.fence_seconds = fence_seconds
        self._generations: dict[uuid.UUID, int] = {}
        self._renewed: dict[uuid.UUID, float] = {}  # monotonic time the last successful claim/renewal was sent

    async def claim(self, conversation_id: uuid.UUID) -> bool:
        sent = time.monotonic()
        try:
            async with connection() as conn:
                row = await conn.fetchrow(CLAIM, conversation_id, self.holder, self.lease_seconds)
        except asyncpg.ForeignKeyViolationError:  # deleted meanwhile: nothing to run
            return False
        if row is None or row["holder"] != self.holder:
            return False
        self._generations[conversation_id] = row["generation"]
        self._renewed[conversation_id] = sent
        return True

    def generation(self, conversation_id: uuid.UUID) -> int | None:
        return self._generations.get(conversation_id)

    def overdue(self, running: Iterable[uuid.UUID]) -> set[uuid.UUID]:
        deadline = time.monotonic() - self.fence_seconds
        return {cid for cid in running if self._renewed.get(cid, deadline) <= deadline}

    async def holder_elsewhere(self, conversation_id: uuid.UUID) -> str | None:
        async with connection() as conn:
            holder: str | None = await conn.fetchval(HOLDER_ELSEWHERE, conversation_id, self.holder)
        return holder

    async def release(self, conversation_id: uuid.UUID, *, only_mine: bool = False) -> None:
        self._generations.pop(conversation_id, None)
        self._renewed.pop(conversation_id, None)
        async with connection() as conn:
            if only_mine:
                await conn.execute(RELEASE_MINE, conversation_id, self.holder)
            else:
                await conn.execute(RELEASE, conversation_id)

    async def renew(self, running: Iterable[uuid.UUID]) -> set[uuid.UUID]:
        ids = list(running)
        if not ids:
            return set()
        sent = time.monotonic()
        async with connection() as conn:
            rows = await conn.fetch(RENEW, self.holder, ids, self.lease_seconds)
        ours = {row["conversation"] for row in rows}
        for cid in ours:
            self._renewed[cid] = sent
        return ours

    async def orphans(self) -> list[uuid.UUID]:
        async with connection() as conn:
            rows = await conn.fetch(ORPHANS, ADOPT_BATCH)
        return [row["conversation"] for row in rows]

    async def close(self) -> None:
        async with connection() as conn:
            await conn.execute(EXPIRE_MINE, self.holder)


def build_ownership(channels: str, in_process_agent: bool) -> Ownership:
    """Leases only where they matter: several processes (postgres or redis channels; the leases stay in
    PostgreSQL either way) running in-process agents.
    LiveKit agents run in LiveKit's workers; any app process can start or stop their rooms."""
    return LeaseOwnership() if channels != "memory" and in_process_agent else Ownership()


class LocalAgents(Protocol):
    """What the lease keeper and the command router use of the agent supervisor (which uses this module, so it
    is named by its shape, not imported)."""

    runtime: AgentRuntime
    ownership: Ownership

    async def adopt(self, conversation_id: uuid.UUID) -> None: ...

    async def deliver_local_text(self, conversation_id: uuid.UUID, text: str) -> None: ...

    async def interrupt_local(self, conversation_id: uuid.UUID) -> None: ...

    async def retry_local(self, conversation_id: uuid.UUID) -> None: ...

    async def ended_elsewhere(self, conversation_id: uuid.UUID) -> None: ...

    async def fence(self, conversation_id: uuid.UUID) -> None: ...

    def hold(self, conversation_id: uuid.UUID, held: bool) -> None: ...


async def keep_leases(service: LocalAgents, interval: float = HEARTBEAT_SECONDS) -> None:
    """Heartbeat and takeover, for the life of the app: renew this process's leases, stop any agent whose
    lease another process took (this one stalled), and adopt conversations whose process died."""
    ownership = service.ownership
    if not ownership.distributed:
        return
    running = getattr(service.runtime, "running", None)
    outage = OutageNotice(log, "agent leases")
    fencing = asyncio.create_task(fence_overdue(service), name="chatapp-agent-fencing")
    try:
        await _renew_and_adopt(service, running, outage, interval)
    finally:
        fencing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await fencing


async def fence_overdue(service: LocalAgents, interval: float = FENCE_CHECK_SECONDS) -> None:
    """Hold, at once, the agent of every conversation whose lease this process could not renew in time, and let it
    go on when a renewal succeeds (a renewal can hang for the whole connect timeout while the database is
    unreachable, so this runs on its own)."""
    running = getattr(service.runtime, "running", None)
    if running is None:
        return
    held: set[uuid.UUID] = set()
    while True:
        local = set(running())
        overdue = service.ownership.overdue(local)
        if overdue - held:
            log.warning("agent leases of %d conversation(s) not renewed in time: held", len(overdue - held))
        for cid in overdue - held:
            service.hold(cid, True)
        for cid in (held - overdue) & local:
            service.hold(cid, False)
        held = overdue
        await asyncio.sleep(interval)


async def _renew_and_adopt(service: LocalAgents, running: Any, outage: OutageNotice, interval: float) -> None:
    ownership = service.ownership
    while True:
        try:
            local = set(running()) if running is not None else set()
            for lost in local - await ownership.renew(local):
                log.warning("lost the agent lease of conversation %s; stopping the agent here", lost)
                await service.fence(lost)
            orphans = await ownership.orphans()
            outage.recovered()
            for orphan in orphans:
                await service.adopt(orphan)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an outage is said once (and its end once); anything else is a bug
            if is_outage(exc):
                outage.failed(exc)
            else:
                log.exception("agent lease round failed")
        await asyncio.sleep(interval)


class CommandRouter:
    """Receives agent commands from the hub (any process may send them) and runs them on this process's agents."""

    def __init__(self, service: LocalAgents) -> None:
        self._service = service
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, event: Command | Ended) -> None:
        work: Coroutine[Any, Any, None]
        match event:
            case AgentText(to=to) if to == PROCESS_ID:
                work = self._service.deliver_local_text(event.conversation_id, event.text)
            case AgentInterrupt(to=to) if to == PROCESS_ID:
                work = self._service.interrupt_local(event.conversation_id)
            case AgentRetry(to=to) if to == PROCESS_ID:
                work = self._service.retry_local(event.conversation_id)
            case Ended(origin=origin) if origin != PROCESS_ID:
                work = self._service.ended_elsewhere(event.conversation_id)
            case _:
                return
        task = asyncio.create_task(self._run(work, type(event).__name__), name=f"agent-command-{event.conversation_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, work: Coroutine[Any, Any, None], kind: str) -> None:
        try:
            await work
        except Exception:
            log.exception("agent command %s failed", kind)
