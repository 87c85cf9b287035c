"""The HTTP connection limits of `chatapp serve`: how big a request's head may be, and how long a client may
take to send its request or to read the response.

uvicorn[standard] parses HTTP with httptools, which has no limit at all: a client can send megabytes of headers
and uvicorn keeps them all in memory and hands them to the app. `LimitedHttpToolsProtocol` counts the bytes
received while a request's head is incomplete and answers 431 (then closes) once they pass `MAX_REQUEST_HEAD`,
so memory per connection stays bounded. h11 (used when httptools is missing) gets the same limit through
uvicorn's `h11_max_incomplete_event_size` (it answers 400).

uvicorn also has no read timeout: its only one, `timeout_keep_alive`, runs between requests, so a connection
that sends nothing, or a head or body a byte at a time, stayed open for as long as the client liked (an audit
held 2,000 past 75 s), and a response to a client that stopped reading waited for it forever (a live stream
never ends by itself). The same protocol adds, from settings (`Timeouts`):

- a header timeout: from the connection's start, or from the first byte of a later request, to the end of the
  head (408, or a silent close when nothing was sent);
- a body timeout, plus a second per `MIN_BODY_RATE` bytes received (Apache's mod_reqtimeout rule): a slow but
  steady upload finishes, a trickle is answered 408 and closed;
- a write-stall timeout: a connection whose writes stay paused (the client's window and the kernel's buffers
  full, and 64 KiB more queued in the server) that long is aborted, which ends the response or stream on it.

The h11 fallback has the head cap and uvicorn's keep-alive timeout only; uvicorn[standard] always brings
httptools.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass
from typing import Any, cast

MAX_REQUEST_HEAD = 32 * 1024  # bytes; the app's own cookies and headers take well under 4 KiB
MIN_BODY_RATE = 1024  # bytes per second a request body must keep up, on average, once past the body timeout

log = logging.getLogger(__name__)

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - uvicorn without the [standard] extras
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

_TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 15\r\n"
    b"connection: close\r\n"
    b"\r\n"
    b"Request timeout"
)
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 31\r\n"
    b"connection: close\r\n"
    b"\r\n"
    b"Request header fields too large"
)


class _HeadTooLarge(Exception):
    """Raised from a parser callback: httptools stops, and uvicorn's error path answers (431, below)."""


@dataclass(frozen=True)
class Timeouts:
    """Seconds; see the module docstring (the settings CHATAPP_HEADER_TIMEOUT, _BODY_TIMEOUT, _WRITE_STALL_TIMEOUT)."""

    header: float = 10.0
    body: float = 30.0
    write_stall: float = 30.0


DEFAULT_TIMEOUTS = Timeouts()


if HttpToolsProtocol is not None:

    class LimitedHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol, refusing a request whose head grows past `MAX_REQUEST_HEAD`: counted
        as parsed (a head that arrives in one read) and as received (one still arriving, held by httptools);
        and closing a connection whose client is too slow to send its request or to read (`Timeouts`)."""

        _in_head = False
        _head_bytes = 0
        _received = 0
        _too_large = False
        _body_received = 0
        _body_started = 0.0
        _read_timer: asyncio.TimerHandle | None = None
        _stall_timer: asyncio.TimerHandle | None = None

        def __init__(self, *args: Any, timeouts: Timeouts = DEFAULT_TIMEOUTS, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.timeouts = timeouts

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_read(self.timeouts.header, self._head_timed_out)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_read()
            if self._stall_timer is not None:
                self._stall_timer.cancel()
                self._stall_timer = None
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head = True
            self._head_bytes = self._received = 0
            if self._read_timer is None:  # a later request on a kept-alive connection: its head starts now
                self._arm_read(self.timeouts.header, self._head_timed_out)

        def on_url(self, url: bytes) -> None:
            self._grow(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._grow(len(name) + len(value) + 4)
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._body_received = 0
            self._body_started = self.loop.time()
            self._arm_read(self.timeouts.body, self._body_timed_out)  # disarmed when the message is complete
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            self._body_received += len(body)
            super().on_body(body)

        def on_message_complete(self) -> None:
            self._disarm_read()
            super().on_message_complete()

        def handle_websocket_upgrade(self) -> None:
            self._disarm_read()  # the connection is the WebSocket protocol's from here on
            super().handle_websocket_upgrade()

        def _grow(self, size: int) -> None:
            self._head_bytes += size
            if self._head_bytes > MAX_REQUEST_HEAD:
                self._too_large = True
                raise _HeadTooLarge

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._in_head and not self.transport.is_closing():
                self._received += len(data)
                if self._received > MAX_REQUEST_HEAD:
                    self._too_large = True
                    self.send_400_response("")

        def send_400_response(self, msg: str) -> None:
            if not self._too_large:
                super().send_400_response(msg)
                return
            log.warning("refused a request whose headers passed %d bytes (HTTP 431)", MAX_REQUEST_HEAD)
            self._in_head = False
            self.transport.write(_TOO_LARGE)
            self.transport.close()

        # ---- read timeouts: one timer, for the head or the body being read ----

        def _arm_read(self, delay: float, callback: Any) -> None:
            self._disarm_read()
            self._read_timer = self.loop.call_later(delay, callback)

        def _disarm_read(self) -> None:
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None

        def _reading_paused(self, callback: Any) -> bool:
            """uvicorn stops reading while the app has not taken the last body part, or during a pipelined
            response: the client is not slow then, so the clock starts over once reading goes on."""
            if self.flow is not None and self.flow.read_paused:
                self._body_started, self._body_received = self.loop.time(), 0
                self._arm_read(1.0, callback)
                return True
            return False

        def _head_timed_out(self) -> None:
            self._read_timer = None
            if self.transport.is_closing() or self._reading_paused(self._head_timed_out):
                return
            if self._in_head:  # part of a request came: say why it ends
                log.info("closed a connection whose request head took over %g s (HTTP 408)", self.timeouts.header)
                self.transport.write(_TIMED_OUT)
            self.transport.close()

        def _body_timed_out(self) -> None:
            self._read_timer = None
            if self.transport.is_closing() or self._reading_paused(self._body_timed_out):
                return
            allowed = self.timeouts.body + self._body_received / MIN_BODY_RATE
            left = self._body_started + allowed - self.loop.time()
            if left > 0:  # the body kept coming fast enough: its deadline moved
                self._arm_read(left, self._body_timed_out)
                return
            log.info("closed a connection whose request body came too slowly (HTTP 408)")
            if self.cycle is None or not self.cycle.response_started:
                self.transport.write(_TIMED_OUT)
            self.transport.close()

        # ---- write-stall timeout ----

        def pause_writing(self) -> None:
            super().pause_writing()
            if self._stall_timer is None:
                self._stall_timer = self.loop.call_later(self.timeouts.write_stall, self._write_stalled)

        def resume_writing(self) -> None:
            super().resume_writing()
            if self._stall_timer is not None:
                self._stall_timer.cancel()
                self._stall_timer = None

        def _write_stalled(self) -> None:
            self._stall_timer = None
            log.info("closed a connection whose client read nothing for %g s", self.timeouts.write_stall)
            self.transport.abort()  # close() would wait for the buffer to drain, which it never does


def http_protocol(timeouts: Timeouts) -> type[asyncio.Protocol] | str:
    """What to pass as uvicorn's `http=`: the limited httptools protocol with these timeouts, or h11 when
    httptools is missing. A partial, not a subclass made here: uvicorn pickles it to spawned workers."""
    if HttpToolsProtocol is None:
        return "h11"
    return cast("type[asyncio.Protocol]", functools.partial(LimitedHttpToolsProtocol, timeouts=timeouts))
