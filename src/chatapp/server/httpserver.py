"""A cap on the size of a request's head (request line and headers), for `chatapp serve`.

uvicorn[standard] parses HTTP with httptools, which has no limit at all: a client can send megabytes of headers
and uvicorn keeps them all in memory and hands them to the app. `LimitedHttpToolsProtocol` counts the bytes
received while a request's head is incomplete and answers 431 (then closes) once they pass `MAX_REQUEST_HEAD`,
so memory per connection stays bounded. h11 (used when httptools is missing) gets the same limit through
uvicorn's `h11_max_incomplete_event_size` (it answers 400).
"""

from __future__ import annotations

import asyncio
import logging

MAX_REQUEST_HEAD = 32 * 1024  # bytes; the app's own cookies and headers take well under 4 KiB

log = logging.getLogger(__name__)

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - uvicorn without the [standard] extras
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

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


if HttpToolsProtocol is not None:

    class LimitedHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol, refusing a request whose head grows past `MAX_REQUEST_HEAD`: counted
        as parsed (a head that arrives in one read) and as received (one still arriving, held by httptools)."""

        _in_head = False
        _head_bytes = 0
        _received = 0
        _too_large = False

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head = True
            self._head_bytes = self._received = 0

        def on_url(self, url: bytes) -> None:
            self._grow(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._grow(len(name) + len(value) + 4)
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._in_head = False
            super().on_headers_complete()

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


def http_protocol() -> type[asyncio.Protocol] | str:
    """What to pass as uvicorn's `http=`: the limited httptools protocol, or h11 when httptools is missing."""
    return LimitedHttpToolsProtocol if HttpToolsProtocol is not None else "h11"
