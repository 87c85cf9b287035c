"""Which app process runs each active conversation's in-process agent: exactly one, whichever process serves.

With one process (memory channels) every agent is this process's and nothing is stored. With several
(postgres or redis channels) ownership is a lease row in `agent_lease`: the holder renews it every HEARTBEAT_SECONDS;
a lease that ran out (its process was killed) is taken over by another process, whose agent gets the stored
transcript as history and answers a user message that was left unanswered. A lease table rather than an
advisory lock: it can be read by any process (who owns this?), is easy to observe, and works through
pgbouncer's transaction pooling, where a session-level lock would need its own dedicated connection.

Commands for an agent that runs elsewhere travel over the hub's channel: typed text as an `AgentText` event
addressed to the holder, the Stop button as `AgentInterrupt`; stopping rides on the `Ended` event every
process already receives.
"""

from __future__ import annotations

import asyncio
import logging
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
ADOPT_BATCH = 20

CLAIM = """
INSERT INTO agent_lease (conversation, holder, expires_at) VALUES ($1, $2, now() + make_interval(secs => $3))
ON CONFLICT (conversation) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
WHERE agent_lease.holder = EXCLUDED.holder OR agent_lease.expires_at < now()
RETURNING holder
"""
HOLDER_ELSEWHERE = "SELECT holder FROM agent_lease WHERE conversation = $1 AND holder <> $2 AND expires_at > now()"
RENEW = """
UPDATE agent_lease SET expires_at = now() + make_interval(secs => $3)
WHERE holder = $1 AND conversation = ANY($2::uuid[]) RETURNING conversation
"""
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

    def __init__(self, lease_seconds: float = LEASE_SECONDS) -> None:
        self.lease_seconds = lease_seconds

    async def claim(self, conversation_id: uuid.UUID) -> bool:
        try:
            async with connection() as conn:
                holder = await conn.fetchval(CLAIM, conversation_id, self.holder, self.lease_seconds)
        except asyncpg.ForeignKeyViolationError:  # deleted meanwhile: nothing to run
            return False
        return bool(holder == self.holder)

    async def holder_elsewhere(self, conversation_id: uuid.UUID) -> str | None:
        async with connection() as conn:
            holder: str | None = await conn.fetchval(HOLDER_ELSEWHERE, conversation_id, self.holder)
        return holder

    async def release(self, conversation_id: uuid.UUID, *, only_mine: bool = False) -> None:
        async with connection() as conn:
            if only_mine:
                await conn.execute(RELEASE_MINE, conversation_id, self.holder)
            else:
                await conn.execute(RELEASE, conversation_id)

    async def renew(self, running: Iterable[uuid.UUID]) -> set[uuid.UUID]:
        ids = list(running)
        if not ids:
            return set()
        async with connection() as conn:
            rows = await conn.fetch(RENEW, self.holder, ids, self.lease_seconds)
        return {row["conversation"] for row in rows}

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


async def keep_leases(service: LocalAgents, interval: float = HEARTBEAT_SECONDS) -> None:
    """Heartbeat and takeover, for the life of the app: renew this process's leases, stop any agent whose
    lease another process took (this one stalled), and adopt conversations whose process died."""
    ownership = service.ownership
    if not ownership.distributed:
        return
    running = getattr(service.runtime, "running", None)
    outage = OutageNotice(log, "agent leases")
    while True:
        try:
            local = set(running()) if running is not None else set()
            for lost in local - await ownership.renew(local):
                log.warning("lost the agent lease of conversation %s; stopping the agent here", lost)
                await service.runtime.stop(lost)
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
