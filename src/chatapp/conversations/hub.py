"""Fan-out of live events to every SSE connection, in this process and (through Postgres) in the others.

Every event is published once to one Litestar channel; each process holds one subscription and routes
events to its local listeners by conversation and by user. With `CHATAPP_CHANNELS=postgres` the channel is
a LISTEN/NOTIFY channel, so one NOTIFY per event reaches every process however many tabs are open, and the
events of one request go out in one statement (one round trip, see `Hub.publish_many`); with `redis` it is a
Redis pub/sub channel, with the same guarantees (redis_channels.py). NOTIFY payloads are
limited to 8000 bytes, so larger events travel as ordered parts and are reassembled. The events are the
union in live_events.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence

import asyncpg
import msgspec
from litestar.channels import ChannelsPlugin
from litestar.channels.backends.asyncpg import AsyncPgChannelsBackend
from litestar.channels.backends.memory import MemoryChannelsBackend
from sse_starlette.sse import AppStatus

from chatapp.conversations.agent_states import AgentStates
from chatapp.conversations.buffer import TranscriptBuffer
from chatapp.conversations.live_events import (
    AgentInterrupt,
    AgentRetry,
    AgentText,
    Command,
    DecodeError,
    Ended,
    Final,
    History,
    Interim,
    ListenerChange,
    LiveEvent,
    Logout,
    Part,
    Ping,
    Reopened,
    State,
    Titled,
    Wake,
    decode,
    with_origin,
)
from chatapp.conversations.live_events import encode as encode_event
from chatapp.conversations.redis_channels import PersistentRedisChannelsBackend
from chatapp.core import metrics

log = logging.getLogger(__name__)

CHANNEL = "chatapp_events"
MAX_PAYLOAD_BYTES = 7000
LISTENER_QUEUE_SIZE = 2000
PROCESS_ID = uuid.uuid4().hex
CONNECT_TIMEOUT = 5.0
LISTENER_CHECK_SECONDS = 5.0
RECONNECT_MIN_SECONDS = 0.1
RECONNECT_MAX_SECONDS = 2.0
EXIT_CHECK_SECONDS = 0.5  # how soon streams end once the server is told to stop (sse-starlette polls as often)
PING = Ping()
CONNECTION_ERRORS = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.InterfaceError,
)
# One round trip for any number of payloads; WITH ORDINALITY ... ORDER BY sends them in the array's order
# (PostgreSQL evaluates a volatile output column like pg_notify after the sort).
NOTIFY_MANY_SQL = "SELECT pg_notify($1, p) FROM unnest($2::text[]) WITH ORDINALITY AS t(p, n) ORDER BY n"


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
        for channel in channels:
            await self.publish_many([data], channel)

    async def publish_many(self, payloads: Sequence[bytes], channel: str) -> None:
        """Send all payloads, in order, in one statement over the kept connection (Litestar's backend opens a
        connection per payload); a connection lost meanwhile (a restart) is replaced once."""
        texts = [payload.decode() for payload in payloads]
        async with self._publish_lock:
            for attempt in (1, 2):
                try:
                    if self._publisher is None or self._publisher.is_closed():
                        self._publisher = await asyncpg.connect(dsn=self._dsn, timeout=CONNECT_TIMEOUT)
                    await self._publisher.execute(NOTIFY_MANY_SQL, channel, texts)
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
            self._queue.put_nowait((CHANNEL, listener_change(up)))


class Channels(ChannelsPlugin):
    """Litestar's channels plugin, able to publish a batch of payloads in one go where the backend can."""

    async def wait_published_many(self, payloads: Sequence[bytes], channel: str) -> None:
        if isinstance(self._backend, PersistentAsyncPgChannelsBackend | PersistentRedisChannelsBackend):
            await self._backend.publish_many(payloads, channel)
        else:  # in memory: nothing to save, and in order
            for payload in payloads:
                await self._backend.publish(payload, [channel])

    @property
    def postgres(self) -> bool:
        """Whether the channel is PostgreSQL's LISTEN/NOTIFY, so a statement can send its events itself."""
        return isinstance(self._backend, PersistentAsyncPgChannelsBackend)


def make_channels(kind: str, dsn: str, redis_url: str = "") -> Channels:
    backend: PersistentAsyncPgChannelsBackend | PersistentRedisChannelsBackend | MemoryChannelsBackend
    if kind == "postgres":
        backend = PersistentAsyncPgChannelsBackend(dsn)
    elif kind == "redis":
        backend = PersistentRedisChannelsBackend(redis_url, listener_change)
    else:
        backend = MemoryChannelsBackend()
    return Channels(backend=backend, channels=[CHANNEL])


# Where a final's payload holds its seq: `Final.seq` is encoded as `"s":0,` with seq 0, and nowhere else can that
# text occur (inside a JSON string a quote is always escaped).
_SEQ_FIELD = b'"s":0,'


def seq_template(final: Final) -> tuple[str, str] | None:
    """The final's payload as published (with this process's origin) split around its seq, for a statement that
    learns the seq as it inserts the row (queries.STORE_OPEN_FINALS_SQL): head + str(seq) + tail is what `encode`
    gives with that seq. None when it would not fit one NOTIFY (then it goes in parts, through publish_many)."""
    data = encode_event(with_origin(msgspec.structs.replace(final, seq=0), PROCESS_ID))
    if len(data) + 10 > MAX_PAYLOAD_BYTES or data.count(_SEQ_FIELD) != 1:
        return None
    head, _, tail = data.partition(_SEQ_FIELD)
    return (head + b'"s":').decode(), (b"," + tail).decode()


def stopping() -> bool:
    """The server was told to stop (SIGTERM, Ctrl+C). sse-starlette's patch of uvicorn's signal handler says so
    when it was imported before the handler was installed (`chatapp serve` with one worker); a worker process
    installs it first, so its uvicorn server, which the handler belongs to, is asked too."""
    if AppStatus.should_exit:
        return True
    server = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    return getattr(server, "should_exit", False) is True


def listener_change(up: bool) -> bytes:
    """The local message that tells this process's hub its subscription went down or came back."""
    return encode_event(ListenerChange(up=up, origin=PROCESS_ID))


def encode(event: LiveEvent) -> list[bytes]:
    """The event as one payload, or as ordered parts that each fit a NOTIFY."""
    data = encode_event(event)
    if len(data) <= MAX_PAYLOAD_BYTES:
        return [data]
    # Split by characters: in a part each takes at most 4 bytes (JSON text has no raw control characters, so
    # an ASCII one is escaped to 2 at most), leaving room for the envelope.
    text = data.decode()
    size = (MAX_PAYLOAD_BYTES - 200) // 4
    pieces = [text[i : i + size] for i in range(0, len(text), size)]
    part_id = uuid.uuid4().hex
    return [encode_event(Part(id=part_id, n=n, of=len(pieces), data=piece)) for n, piece in enumerate(pieces)]


class Listener:
    """One SSE connection's inbox. `overflowed` ends the stream; the client reconnects and replays from the DB.

    A deque and at most one waiting future, not an asyncio.Queue (three deques, a bound and a counter): one is
    held by every idle stream for its whole life (`python -m bench streams` measures it).
    """

    __slots__ = ("_items", "_waiter", "conversation_id", "overflowed", "phase", "user_id")

    def __init__(self, conversation_id: uuid.UUID, user_id: uuid.UUID) -> None:
        self.conversation_id = conversation_id
        self.user_id = user_id
        self.overflowed = False
        self.phase = 0  # which tick of the ping interval pings it (Hub.keep_streams)
        self._items: deque[LiveEvent] | None = None  # a deque while events wait (an idle stream holds none)
        self._waiter: asyncio.Future[None] | None = None

    def offer(self, event: LiveEvent) -> None:
        if self._items is None:
            self._items = deque()
        elif len(self._items) >= LISTENER_QUEUE_SIZE:
            self.overflowed = True
            return
        self._items.append(event)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def close(self) -> None:
        """End the stream (its client left, or the process stops): the reader sees `overflowed` at once."""
        self.overflowed = True
        if self._items is None:
            self._items = deque()
        self._items.append(Wake())
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self) -> LiveEvent:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.get_nowait()

    def get_nowait(self) -> LiveEvent:
        """The oldest waiting event (IndexError when none)."""
        if not self._items:
            raise IndexError("no event waiting")
        event = self._items.popleft()
        if not self._items:
            self._items = None
        return event

    def empty(self) -> bool:
        return not self._items


class Hub:
    def __init__(self, channels: Channels, buffer: TranscriptBuffer) -> None:
        self._channels = channels
        self._buffer = buffer
        self._by_conversation: dict[uuid.UUID, set[Listener]] = {}
        self._by_user: dict[uuid.UUID, set[Listener]] = {}
        self._parts: dict[str, list[str | None]] = {}
        self.agent_states = AgentStates()
        self._added = 0
        # False while the LISTEN connection (postgres) or the subscription (redis) is down: /healthz reports it.
        self.live = True
        # Set by the agent ownership layer; sees agent commands and `Ended` (which stops an agent anywhere).
        self.on_command: Callable[[Command | Ended], None] | None = None

    @property
    def channel_in_sql(self) -> str | None:
        """The NOTIFY channel a statement may publish finals on itself (seq_template), or None: redis and
        in-memory channels publish through publish_many only."""
        return CHANNEL if self._channels.postgres else None

    async def publish(self, event: LiveEvent) -> None:
        await self.publish_many([event])

    async def publish_many(self, events: Iterable[LiveEvent]) -> None:
        """Publish events in order, all in one round trip with postgres channels (one NOTIFY statement) or
        redis channels (one script run)."""
        payloads = [payload for event in events for payload in encode(with_origin(event, PROCESS_ID))]
        if payloads:
            await self._channels.wait_published_many(payloads, CHANNEL)

    async def run(self) -> None:
        """Receive every published message and route it; runs for the life of the app."""
        async with self._channels.start_subscription([CHANNEL]) as subscriber:
            async for raw in subscriber.iter_events():
                try:
                    self.receive(raw)
                except Exception:  # a bad message must not stop live delivery for everyone
                    log.exception("dropping an undeliverable live message")

    def receive(self, raw: bytes | str) -> None:
        """One payload off the channel: an event, or a part of one. A malformed one is dropped, with a warning."""
        try:
            event = decode(raw)
            if isinstance(event, Part):
                whole = self._assemble(event)
                if whole is None:
                    return
                event = decode(whole)
        except DecodeError as exc:  # the reason names the field, never its text
            log.warning("dropping a malformed live message: %s", exc)
            return
        if isinstance(event, Part):
            log.warning("dropping a malformed live message: a part inside a part")
            return
        self.dispatch(event)

    def _assemble(self, part: Part) -> str | None:
        """The whole encoded event once its last part is in, else None."""
        parts = self._parts.setdefault(part.id, [None] * part.of)
        if len(parts) != part.of or part.n >= part.of:
            del self._parts[part.id]
            raise DecodeError("a part that does not fit its message")
        parts[part.n] = part.data
        if any(piece is None for piece in parts):
            return None
        del self._parts[part.id]
        return "".join(piece for piece in parts if piece is not None)

    def dispatch(self, event: LiveEvent) -> None:
        remote = event.origin != PROCESS_ID
        match event:
            case ListenerChange(up=up):
                self._listener_changed(up)
                return
            case AgentText() | AgentInterrupt() | AgentRetry():
                if self.on_command is not None:
                    self.on_command(event)
                return
            case Ended(conversation_id=conversation_id):
                if self.on_command is not None:
                    self.on_command(event)
                self._buffer.forget(conversation_id)
                self.agent_states.forget(conversation_id)
            case Reopened(conversation_id=conversation_id):
                self._buffer.reopen(conversation_id)
            case Interim() if remote:
                # Keep this process's buffer in step with interims ingested elsewhere, so New Chat here flushes them.
                self._buffer.apply_interim(event.transcript_event())
            case Final(conversation_id=conversation_id, item_id=item_id) if remote:
                self._buffer.finish(conversation_id, item_id)
            case State():
                self.agent_states.record(event)
        for listener in self._targets(event):
            listener.offer(event)

    def _targets(self, event: LiveEvent) -> set[Listener]:
        """A conversation's events go to its streams; a user's (and `Ended`, also) to all that user's streams."""
        match event:
            case Final() | Interim() | State():
                return set(self._by_conversation.get(event.conversation_id, ()))
            case Ended():
                return self._by_conversation.get(event.conversation_id, set()) | self._by_user.get(event.user_id, set())
            case History() | Titled() | Logout():
                return set(self._by_user.get(event.user_id, ()))
        return set()

    def add(self, listener: Listener) -> None:
        """From now on `listener` gets its conversation's and its user's events (until `discard`)."""
        self._added += 1
        listener.phase = self._added
        self._by_conversation.setdefault(listener.conversation_id, set()).add(listener)
        self._by_user.setdefault(listener.user_id, set()).add(listener)
        metrics.SSE_STREAMS.inc()

    def discard(self, listener: Listener) -> None:
        metrics.SSE_STREAMS.dec()
        for index, key in ((self._by_conversation, listener.conversation_id), (self._by_user, listener.user_id)):
            group = index.get(key)
            if group is not None:
                group.discard(listener)
                if not group:
                    del index[key]

    @contextlib.asynccontextmanager
    async def listen(self, conversation_id: uuid.UUID, user_id: uuid.UUID) -> AsyncIterator[Listener]:
        listener = Listener(conversation_id, user_id)
        self.add(listener)
        try:
            yield listener
        finally:
            self.discard(listener)

    async def keep_streams(self, ping_seconds: float, tick: float = EXIT_CHECK_SECONDS) -> None:
        """For the life of the app, one timer for all of this process's streams: a `Ping` to each every
        `ping_seconds` (the page's watchdog reconnects a silent stream), and, once the server is told to stop
        (SIGTERM), every stream ended so the graceful shutdown does not wait for clients that never leave.
        Each tick pings the streams of its phase only: all at once, thousands of sends would stall every other
        request for that moment."""
        phases = max(1, int(ping_seconds / tick))  # never later than asked
        ticks = 0
        while not stopping():
            await asyncio.sleep(tick)
            ticks += 1
            due = ticks % phases
            for group in list(self._by_conversation.values()):
                for listener in group:
                    if listener.phase % phases == due:
                        listener.offer(PING)
        self.drop_all()
        while True:  # streams opened meanwhile (the listening socket closes a moment later) end too
            await asyncio.sleep(tick)
            self.drop_all()

    async def end_login_session(self, user_id: uuid.UUID, session: str) -> None:
        """Logout: end the streams of that login session (`session`, a hash of its id) in every process."""
        event = Logout(user_id=user_id, session=session)
        try:
            await self.publish(event)
        except Exception:  # logout must succeed whatever live delivery does: end this process's streams at least
            log.warning("could not publish a logout to the other processes", exc_info=True)
            self.dispatch(event)

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
                listener.close()
