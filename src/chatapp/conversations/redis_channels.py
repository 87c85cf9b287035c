"""`CHATAPP_CHANNELS=redis`: live events cross processes through Redis pub/sub instead of PostgreSQL's NOTIFY.

The next step when one database's LISTEN/NOTIFY fan-out is outgrown (bench `fanout`); agent leases, stream
slots and everything stored stay in PostgreSQL. Same guarantees as the postgres backend:

- One round trip per request, in order: a Lua script PUBLISHes all of a request's payloads, in the array's
  order, atomically (Redis runs a script alone), like NOTIFY_MANY_SQL's one statement.
- Publishing happens after the writer's commit, as with NOTIFY (which goes out over its own connection, not in
  the writer's transaction): a stream that sees a final ahead of its cursor fills the gap from the database.
- Pub/sub is at most once: a message published while a process's subscription is down never reaches it. So a
  lost subscription is reported as `ListenerChange(up=False)`, which ends every local stream and makes
  `/healthz` and `/readyz` answer 503, and the re-established one (confirmed by Redis) as `up=True`: the
  clients reconnect and replay from their cursor, so nothing is lost.

Litestar's `RedisChannelsPubSubBackend` reconnects its subscription silently inside redis-py (and publishes one
script call per payload); this subclass keeps its interface and owns the subscription's life instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from typing import Any

from litestar.channels.backends.redis import RedisChannelsPubSubBackend
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
LISTENER_CHECK_SECONDS = 5.0
RECONNECT_MIN_SECONDS = 0.1
RECONNECT_MAX_SECONDS = 2.0
PING_TOKEN = b"chatapp-listener-check"
# KEYS[1] is the channel; ARGV the payloads, published in order by one script run.
PUBLISH_MANY_LUA = """
for i = 1, #ARGV do
    redis.call("PUBLISH", KEYS[1], ARGV[i])
end
return #ARGV
"""
ERRORS = (RedisError, OSError, TimeoutError)


class RedisUnavailable(ConnectionError):
    """Publishing failed because Redis cannot be reached: an outage (a ConnectionError, so answered 503)."""


class PersistentRedisChannelsBackend(RedisChannelsPubSubBackend):
    """Litestar's Redis pub/sub backend with one-round-trip batches and a subscription that reports its gaps.

    `report(up)` builds the payload that tells the hub the subscription went down or came back; it travels
    through `stream_events` in order with the events around it.
    """

    def __init__(self, url: str, report: Callable[[bool], bytes]) -> None:
        redis = Redis.from_url(
            url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=CONNECT_TIMEOUT, socket_keepalive=True
        )
        super().__init__(redis=redis)
        self._publish_many = redis.register_script(PUBLISH_MANY_LUA)
        self._report = report
        self._wanted: set[str] = set()
        self._pubsub: PubSub | None = None
        self._wanted_known = asyncio.Event()

    async def on_shutdown(self) -> None:
        await self._drop()
        await self._redis.aclose()

    async def subscribe(self, channels: Iterable[str]) -> None:
        """Subscribe now if Redis answers; if not, `stream_events` reports the outage and keeps retrying."""
        new = set(channels) - self._wanted
        self._wanted.update(new)
        if not new:
            return
        try:
            if self._pubsub is None:
                await self._connect()
            else:  # a channel more on the running subscription (the hub uses one)
                await self._pubsub.subscribe(*new)
        except ERRORS:
            log.warning("cannot subscribe to Redis; live events paused until it answers")
        self._wanted_known.set()

    async def unsubscribe(self, channels: Iterable[str]) -> None:
        """Unsubscribing from the last channel (the hub stopping) closes the subscription."""
        self._wanted.difference_update(channels)
        if not self._wanted:
            self._wanted_known.clear()
            await self._drop()
        elif self._pubsub is not None:
            with contextlib.suppress(*ERRORS):
                await self._pubsub.unsubscribe(*channels)

    async def publish(self, data: bytes, channels: Iterable[str]) -> None:
        for channel in set(channels):
            await self.publish_many([data], channel)

    async def publish_many(self, payloads: Sequence[bytes], channel: str) -> None:
        """All payloads, in order, in one script run. A pooled connection that died with a Redis restart is
        replaced once (a duplicate is harmless: streams skip what their cursor has seen)."""
        for attempt in (1, 2):
            try:
                await self._publish_many(keys=[channel], args=list(payloads))
                return
            except ERRORS as exc:
                if attempt == 2:
                    raise RedisUnavailable("Redis did not take the live events") from exc

    async def stream_events(self) -> AsyncGenerator[tuple[str, Any], None]:
        up, delay = True, RECONNECT_MIN_SECONDS
        while True:
            await self._wanted_known.wait()
            try:
                if self._pubsub is None:
                    await self._connect()
                if not up:
                    log.warning("Redis subscription re-established")
                    up, delay = True, RECONNECT_MIN_SECONDS
                    for channel in self._wanted:
                        yield channel, self._report(True)
                async for item in self._read():
                    yield item
            except ERRORS as exc:
                await self._drop()
                if up:
                    log.warning("lost the Redis subscription (%s); live events paused until it is back", exc)
                    up = False
                    for channel in self._wanted:
                        yield channel, self._report(False)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_SECONDS)

    async def _connect(self) -> None:
        """A fresh subscription, returned once Redis confirmed it: anything published later reaches us."""
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(*self._wanted)
            confirmed: set[bytes] = set()
            async with asyncio.timeout(CONNECT_TIMEOUT):
                while confirmed != {c.encode() for c in self._wanted}:
                    message = await pubsub.get_message(timeout=CONNECT_TIMEOUT)
                    if message is not None and message["type"] == "subscribe":
                        confirmed.add(message["channel"])
        except BaseException:
            with contextlib.suppress(*ERRORS):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            raise
        self._pubsub = pubsub

    async def _read(self) -> AsyncGenerator[tuple[str, bytes], None]:
        """Messages until the connection fails; a PING every LISTENER_CHECK_SECONDS must be answered within as
        long, so a connection that died without a word (a host cut off) is noticed too."""
        pubsub = self._pubsub
        loop = asyncio.get_running_loop()
        next_ping, pong_due = loop.time() + LISTENER_CHECK_SECONDS, None
        while pubsub is not None and pubsub is self._pubsub:  # else unsubscribed from everything: closed
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            now = loop.time()
            if message is not None:
                if message["type"] == "pong":
                    pong_due = None
                elif message["type"] == "message":
                    channel = message["channel"].decode()
                    if channel in self._wanted:
                        yield channel, message["data"]
            if pong_due is not None and now > pong_due:
                raise TimeoutError("Redis did not answer the subscription's PING")
            if pong_due is None and now >= next_ping:
                await pubsub.ping(PING_TOKEN)
                next_ping, pong_due = now + LISTENER_CHECK_SECONDS, now + LISTENER_CHECK_SECONDS

    async def _drop(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(*ERRORS):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
