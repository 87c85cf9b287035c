"""Fan-out of live events to every SSE connection, in this process and (through Postgres) in the others.

Every event is published once to one Litestar channel; each process holds one subscription and routes
messages to its local listeners by conversation and by user. With `CHATAPP_CHANNELS=postgres` the channel is
a LISTEN/NOTIFY channel, so one NOTIFY per event reaches every process however many tabs are open.
NOTIFY payloads are limited to 8000 bytes, so larger messages travel as ordered parts and are reassembled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
from litestar.channels import ChannelsPlugin
from litestar.channels.backends.asyncpg import AsyncPgChannelsBackend
from litestar.channels.backends.memory import MemoryChannelsBackend

from chatapp import metrics
from chatapp.conversations.buffer import TranscriptBuffer
from chatapp.conversations.events import TranscriptEvent

log = logging.getLogger(__name__)

CHANNEL = "chatapp_events"
MAX_PAYLOAD_BYTES = 7000
LISTENER_QUEUE_SIZE = 2000
PROCESS_ID = uuid.uuid4().hex
CONNECT_TIMEOUT = 5.0
LISTENER_CHECK_SECONDS = 5.0
RECONNECT_MIN_SECONDS = 0.1
RECONNECT_MAX_SECONDS = 2.0
CONNECTION_ERRORS = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.InterfaceError,
)
# Commands for a conversation's agent (see conversations/ownership.py): handed to `on_command`, never to streams.
COMMAND_KINDS = frozenset({"agent.text", "agent.interrupt"})


class PersistentAsyncPgChannelsBackend(AsyncPgChannelsBackend):
    """Litestar's asyncpg backend, publishing over one kept connection, and surviving a lost LISTEN connection.

    Litestar never re-establishes its listener after PostgreSQL restarts: streams would stay open and receive
    nothing. A watchdog notices the loss (asyncpg's termination callback, or a failed periodic check),
    reconnects with backoff and re-LISTENs. Loss and recovery are reported through the event queue itself as
    a local `listener` message, so the hub sees them in order with the events around them.
    """

    def __init__(self, dsn: str) -> None:
        super().__init__(dsn=dsn)
        self._dsn = dsn
        self._publisher: asyncpg.Connection | None = None
        self._publish_lock = asyncio.Lock()
        self._lost = asyncio.Event()
        self._watchdog: asyncio.Task[None] | None = None

    async def on_startup(self) -> None:
        await super().on_startup()
        self._listener_conn.add_termination_listener(self._terminated)
        self._watchdog = asyncio.create_task(self._watch(), name="chatapp-listen-watchdog")

    async def on_shutdown(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        if self._publisher is not None:
            self._publisher.terminate()
        with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            await super().on_shutdown()

    async def publish(self, data: bytes, channels: Iterable[str]) -> None:
        """Send over the kept connection; a connection lost meanwhile (a restart) is replaced once."""
        async with self._publish_lock:
            for attempt in (1, 2):
                try:
                    if self._publisher is None or self._publisher.is_closed():
                        self._publisher = await asyncpg.connect(dsn=self._dsn, timeout=CONNECT_TIMEOUT)
                    for channel in channels:
                        await self._publisher.execute("SELECT pg_notify($1, $2)", channel, data.decode())
                    return
                except CONNECTION_ERRORS:
                    if self._publisher is not None:
                        self._publisher.terminate()
                        self._publisher = None
                    if attempt == 2:
                        raise

    def _terminated(self, connection: asyncpg.Connection) -> None:
        if connection is self._listener_conn:
            self._lost.set()

    async def _watch(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), LISTENER_CHECK_SECONDS)
            if not self._lost.is_set() and await self._alive():
                continue
            log.warning("lost the LISTEN connection to PostgreSQL; live events paused until it is back")
            self._report(up=False)
            await self._reconnect()
            log.warning("LISTEN connection to PostgreSQL re-established")
            self._report(up=True)

    async def _alive(self) -> bool:
        """A connection can die without a word (network, failover): ask it."""
        try:
            async with self._listener_lock:
                await asyncio.wait_for(self._listener_conn.fetchval("SELECT 1"), LISTENER_CHECK_SECONDS)
        except (TimeoutError, *CONNECTION_ERRORS):
            return False
        return True

    async def _reconnect(self) -> None:
        delay = RECONNECT_MIN_SECONDS
        while True:
            self._lost.clear()
            try:
                connection = await asyncpg.connect(dsn=self._dsn, timeout=CONNECT_TIMEOUT)
                async with self._listener_lock:
                    for channel in self._subscribed_channels:
                        await connection.add_listener(channel, self._listener)
                    old, self._listener_conn = self._listener_conn, connection
                connection.add_termination_listener(self._terminated)
                old.terminate()
                return
            except (TimeoutError, *CONNECTION_ERRORS):
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_SECONDS)

    def _report(self, *, up: bool) -> None:
        if self._queue is not None:
            self._queue.put_nowait((CHANNEL, json.dumps({"k": "listener", "up": up, "o": PROCESS_ID}).encode()))


def make_channels(kind: str, dsn: str) -> ChannelsPlugin:
    backend = PersistentAsyncPgChannelsBackend(dsn) if kind == "postgres" else MemoryChannelsBackend()
    return ChannelsPlugin(backend=backend, channels=[CHANNEL])


def encode(message: dict[str, Any]) -> list[str]:
    """The message as one payload, or as ordered parts that each fit a NOTIFY."""
    data = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
    if len(data.encode()) <= MAX_PAYLOAD_BYTES:
        return [data]
    # Split by characters, worst case 4 bytes each, leaving room for the envelope.
    size = (MAX_PAYLOAD_BYTES - 200) // 4
    pieces = [data[i : i + size] for i in range(0, len(data), size)]
    part_id = uuid.uuid4().hex
    return [
        json.dumps({"k": "part", "id": part_id, "n": n, "of": len(pieces), "d": piece}, ensure_ascii=False)
        for n, piece in enumerate(pieces)
    ]


@dataclass(eq=False)
class Listener:
    """One SSE connection's inbox. `overflowed` ends the stream; the client reconnects and replays from the DB."""

    conversation_id: uuid.UUID
    user_id: uuid.UUID
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(LISTENER_QUEUE_SIZE))
    overflowed: bool = False

    def offer(self, message: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.overflowed = True


class Hub:
    def __init__(self, channels: ChannelsPlugin, buffer: TranscriptBuffer) -> None:
        self._channels = channels
        self._buffer = buffer
        self._by_conversation: dict[uuid.UUID, set[Listener]] = {}
        self._by_user: dict[uuid.UUID, set[Listener]] = {}
        self._parts: dict[str, list[str | None]] = {}
        self.agent_states: dict[uuid.UUID, tuple[str, str]] = {}
        # False while the LISTEN connection is down (postgres channels): /healthz reports it.
        self.live = True
        # Set by the agent ownership layer; sees agent commands and `ended` (which stops an agent anywhere).
        self.on_command: Callable[[dict[str, Any]], None] | None = None

    async def publish(self, message: dict[str, Any]) -> None:
        message = {**message, "o": PROCESS_ID}
        for payload in encode(message):
            await self._channels.wait_published(payload, CHANNEL)

    async def run(self) -> None:
        """Receive every published message and route it; runs for the life of the app."""
        async with self._channels.start_subscription([CHANNEL]) as subscriber:
            async for raw in subscriber.iter_events():
                try:
                    self.receive(raw)
                except Exception:  # a bad message must not stop live delivery for everyone
                    log.exception("dropping an undeliverable live message")

    def receive(self, raw: bytes | str) -> None:
        message = json.loads(raw)
        if message.get("k") == "part":
            parts = self._parts.setdefault(message["id"], [None] * int(message["of"]))
            parts[int(message["n"])] = message["d"]
            if any(part is None for part in parts):
                return
            del self._parts[message["id"]]
            message = json.loads("".join(p for p in parts if p is not None))
        self.dispatch(message)

    def dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("k")
        if kind == "listener":
            self._listener_changed(bool(message.get("up")))
            return
        conversation_id = uuid.UUID(message["c"]) if "c" in message else None
        remote = message.get("o") != PROCESS_ID
        if self.on_command is not None and conversation_id is not None and (kind in COMMAND_KINDS or kind == "ended"):
            self.on_command(message)
        if kind in COMMAND_KINDS:
            return
        if conversation_id is not None and remote:
            # Keep this process's buffer in step with interims ingested elsewhere, so New Chat here flushes them.
            if kind == "interim":
                self._buffer.apply_interim(interim_from_message(message))
            elif kind == "final":
                self._buffer.finish(conversation_id, message["i"])
        if kind == "state" and conversation_id is not None:
            self.agent_states[conversation_id] = (message["st"], message.get("d", ""))
        if kind == "ended" and conversation_id is not None:
            self._buffer.forget(conversation_id)
            self.agent_states.pop(conversation_id, None)
        targets: set[Listener] = set()
        if conversation_id is not None:
            targets |= self._by_conversation.get(conversation_id, set())
        if "u" in message:
            targets |= self._by_user.get(uuid.UUID(message["u"]), set())
        for listener in targets:
            listener.offer(message)

    @contextlib.asynccontextmanager
    async def listen(self, conversation_id: uuid.UUID, user_id: uuid.UUID) -> AsyncIterator[Listener]:
        listener = Listener(conversation_id, user_id)
        self._by_conversation.setdefault(conversation_id, set()).add(listener)
        self._by_user.setdefault(user_id, set()).add(listener)
        metrics.SSE_STREAMS.inc()
        try:
            yield listener
        finally:
            metrics.SSE_STREAMS.dec()
            for index, key in ((self._by_conversation, conversation_id), (self._by_user, user_id)):
                group = index.get(key)
                if group is not None:
                    group.discard(listener)
                    if not group:
                        del index[key]

    async def end_login_session(self, user_id: uuid.UUID, session: str) -> None:
        """Logout: end the streams of that login session (`session`, a hash of its id) in every process."""
        message = {"k": "logout", "u": str(user_id), "sh": session}
        try:
            await self.publish(message)
        except Exception:  # logout must succeed whatever live delivery does: end this process's streams at least
            log.warning("could not publish a logout to the other processes", exc_info=True)
            self.dispatch(message)

    def streams_of(self, user_id: uuid.UUID) -> int:
        """This process's open streams of one user (the per-user cap)."""
        return len(self._by_user.get(user_id, ()))

    def _listener_changed(self, up: bool) -> None:
        """The LISTEN connection went down or came back. Either way, end every local stream: events published
        meanwhile never arrive here, and a client that reconnects replays them from the database."""
        self.live = up
        self._parts.clear()  # the rest of a message in parts will not come
        self.drop_all()

    def drop_all(self) -> None:
        """End every local stream (test fault switch); clients reconnect and replay from their cursor."""
        for group in list(self._by_conversation.values()):
            for listener in group:
                listener.overflowed = True
                listener.offer({"k": "wake"})

    def listener_count(self) -> int:
        return sum(len(group) for group in self._by_conversation.values())


def interim_message(event: TranscriptEvent) -> dict[str, Any]:
    return {
        "k": "interim",
        "c": str(event.conversation_id),
        "i": event.item_id,
        "r": event.role,
        "t": event.text,
        "ts": event.timestamp.isoformat(),
    }


def interim_from_message(message: dict[str, Any]) -> TranscriptEvent:
    return TranscriptEvent(
        conversation_id=uuid.UUID(message["c"]),
        item_id=message["i"],
        role=message["r"],
        text=message["t"],
        final=False,
        timestamp=datetime.fromisoformat(message["ts"]),
    )
