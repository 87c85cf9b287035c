"""A live stream's life around its events: its pings from the process's one timer, the end of a stream whose
client left, and every stream ended at once when the server is told to stop.

These used to be sse-starlette's four tasks per stream; now one timer serves all streams (Hub.keep_streams) and
one small task per stream waits for its client to leave (live_response.EventStream).
"""

from __future__ import annotations

import asyncio
import itertools
import re
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.support import AppServer, client_ip, open_conversation, signup

PING_SECONDS = 0.5
STREAMS = re.compile(r"^chatapp_sse_streams (\S+)$", re.MULTILINE)


def _client(server: AppServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, headers={"X-Forwarded-For": client_ip()}, timeout=10.0)


async def _gauge(client: httpx.AsyncClient) -> float:
    match = STREAMS.search((await client.get("/metrics")).text)
    assert match is not None
    return float(match.group(1))


async def test_pings_come_every_interval_and_a_left_stream_is_released(db: str, tmp_path: Path) -> None:
    server = AppServer.start(db, tmp_path / "app", CHATAPP_SSE_PING_SECONDS=str(PING_SECONDS))
    try:
        async with _client(server) as client:
            await signup(client)
            cid = await open_conversation(client)
            pings: list[float] = []
            async with client.stream("GET", f"/conversations/{cid}/stream") as response:
                assert response.status_code == 200
                assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
                assert response.headers["cache-control"] == "no-store"
                assert response.headers["x-accel-buffering"] == "no"
                started = time.monotonic()
                async for line in response.aiter_lines():
                    if line == "event: ping":
                        pings.append(time.monotonic() - started)
                    if len(pings) == 4:
                        break
                assert await _gauge(client) == 1
            # Never later than the interval (the page's watchdog reconnects a stream silent for 2.5 pings).
            assert pings[0] <= PING_SECONDS + 0.5
            assert all(b - a <= PING_SECONDS + 0.5 for a, b in itertools.pairwise(pings))
            # The client left: its stream ends and is no longer counted.
            deadline = time.monotonic() + 10
            while await _gauge(client) != 0:
                assert time.monotonic() < deadline, "the stream of a client that left was not released"
                await asyncio.sleep(0.1)
    finally:
        server.stop()


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_sigterm_ends_open_streams_at_once(db: str, tmp_path: Path, workers: str) -> None:
    """One worker (uvicorn in the serve process) and several (a supervisor, each worker its own uvicorn)."""
    server = AppServer.start(db, tmp_path / "app", CHATAPP_WORKERS=workers, CHATAPP_CHANNELS="postgres")
    try:
        async with _client(server) as client:
            await signup(client)
            cid = await open_conversation(client)
            async with client.stream("GET", f"/conversations/{cid}/stream") as response:
                assert response.status_code == 200
                lines = response.aiter_lines()
                await anext(lines)  # the stream is open and registered
                stopped = time.monotonic()
                server.process.send_signal(signal.SIGTERM)
                async for _ in lines:  # the body ends cleanly (a last empty chunk), not cut off
                    pass
            await asyncio.to_thread(server.process.wait, 10)
            # uvicorn's graceful shutdown waits up to 5 s for open responses, then cancels them with an error.
            assert time.monotonic() - stopped < 4
        log = server.log_path.read_text()
        assert "timeout graceful shutdown exceeded" not in log
        assert "Traceback" not in log
    finally:
        server.stop()
