"""The HTTP response of a live stream: its events as `text/event-stream`, for as long as the client stays.

sse-starlette's `EventSourceResponse` runs four tasks per stream under an anyio task group (the events, a ping
timer, a shutdown watcher and a disconnect watcher), with their cancel scopes, events and futures: over half of
what an idle stream held (`python -m bench streams`). Here the request's own task sends the events, one small task
waits for the client to leave (that needs an ASGI `receive` pending, so a task of its own) and then closes the
stream's inbox, and the pings and the shutdown come as events from one timer for the whole process
(`Hub.keep_streams`), so they go out in order with the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable

from litestar.types import Receive, Scope, Send
from sse_starlette import ServerSentEvent

HEADERS = (
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),  # nginx: pass each event on at once
    (b"connection", b"keep-alive"),
    (b"content-type", b"text/event-stream; charset=utf-8"),
)


class EventStream:
    """An ASGI response sending `events` until they end or the client leaves; `close` ends the events (from
    then on the generator must finish soon: the stream's inbox is closed, Listener.close)."""

    __slots__ = ("close", "events")

    def __init__(self, events: AsyncGenerator[ServerSentEvent, None], close: Callable[[], None]) -> None:
        self.events = events
        self.close = close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        leaving = asyncio.create_task(self._client_left(receive), name="chatapp-stream-disconnect")
        try:
            # A fresh list: middleware adds its headers (security headers, cookies) to the message's own.
            await send({"type": "http.response.start", "status": 200, "headers": list(HEADERS)})
            async for event in self.events:
                await send({"type": "http.response.body", "body": event.encode(), "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            leaving.cancel()
            await self.events.aclose()  # its cleanup (listener, stream slot) when a send failed or was cancelled

    async def _client_left(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.close()
