"""The load generator's HTTP/1.1 keep-alive client: h11 (the protocol engine under httpx) on asyncio streams.

The load generator shares the machine with the app and PostgreSQL; a full client such as httpx spends more CPU
per request than the endpoint under test, so the sender would be measured instead of the app. h11 does the
protocol (framing, chunked bodies, keep-alive rules) and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import h11

READ_SIZE = 65536


@dataclass
class HttpReply:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes


class HttpConnection:
    """One keep-alive connection, one request at a time (JSON POSTs, form POSTs and GETs)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._h11 = h11.Connection(h11.CLIENT)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._h11.our_state is h11.MUST_CLOSE or self._h11.their_state is h11.MUST_CLOSE:
            await self.close()
        if self._reader is None or self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
            self._h11 = h11.Connection(h11.CLIENT)
        return self._reader, self._writer

    async def post_json(self, path: str, body: bytes, headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
        """POST and read the whole reply; returns (status, body). Retries once on a connection the server closed."""
        reply = await self.request("POST", path, body, {"Content-Type": "application/json", **(headers or {})})
        return reply.status, reply.body

    async def request(
        self, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> HttpReply:
        """Send one request and read the whole reply. Retries once on a connection the server closed (idle)."""
        fields = [("Host", f"{self.host}:{self.port}"), *(headers or {}).items()]
        if body is not None:
            fields.append(("Content-Length", str(len(body))))
        for attempt in (1, 2):
            reader, writer = await self._connect()
            try:
                data = self._h11.send(h11.Request(method=method, target=path, headers=fields)) or b""
                if body:
                    data += self._h11.send(h11.Data(data=body)) or b""
                data += self._h11.send(h11.EndOfMessage()) or b""
                writer.write(data)
                return await self._read_reply(reader)
            except (ConnectionError, asyncio.IncompleteReadError, h11.RemoteProtocolError):
                await self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _read_reply(self, reader: asyncio.StreamReader) -> HttpReply:
        response: h11.Response | None = None
        chunks: list[bytes] = []
        while True:
            event = self._h11.next_event()
            if event is h11.NEED_DATA:
                received = await reader.read(READ_SIZE)
                if not received and response is None:
                    raise ConnectionResetError("server closed the connection")
                self._h11.receive_data(received)
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionResetError("server closed the connection")
        assert response is not None
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in response.headers}
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()
        else:
            await self.close()
        return HttpReply(response.status_code, headers, b"".join(chunks))

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        self._reader = self._writer = None
        self._h11 = h11.Connection(h11.CLIENT)


class HttpPool:
    """A fixed set of keep-alive connections handed out one request at a time (several concurrent senders)."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self.connections = [HttpConnection(host, port) for _ in range(size)]
        self._free: asyncio.Queue[HttpConnection] = asyncio.Queue()
        for connection in self.connections:
            self._free.put_nowait(connection)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[HttpConnection]:
        connection = await self._free.get()
        try:
            yield connection
        finally:
            self._free.put_nowait(connection)

    async def close(self) -> None:
        for connection in self.connections:
            await connection.close()


def ingest_body(events: Sequence[Mapping[str, Any]]) -> bytes:
    return json.dumps({"events": list(events)}, separators=(",", ":")).encode()
