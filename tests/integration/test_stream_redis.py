"""Live events over Redis pub/sub (`CHATAPP_CHANNELS=redis`): in one process, across two, and through Redis
going away and coming back. Agent leases and everything stored stay in PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chatapp.conversations.live_events import Final
from tests.factories import final, make_conversation
from tests.support import AppServer, client_ip, event, ingest, open_conversation, signup
from tests.support_redis import RedisServer, start_redis
from tests.support_stream import StreamReader, live_pipeline, stored_seqs


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = start_redis(tmp_path / "redis")
    try:
        yield server
    finally:
        server.stop()


async def test_a_100_final_ingest_publishes_in_one_script_run_in_order(db: str, redis: RedisServer) -> None:
    c = await make_conversation()
    async with live_pipeline("redis", db, redis.url) as pipeline, pipeline.hub.listen(c.id, c.owner) as listener:
        await pipeline.apply(c.id, [final(c.id, "warm-up", "first")], source="api")  # loads the script
        await asyncio.wait_for(listener.get(), 5)
        before = redis.command_calls("evalsha") + redis.command_calls("eval")
        await pipeline.apply(c.id, [final(c.id, f"f-{n}", f"final {n}") for n in range(100)], source="api")
        got = [await asyncio.wait_for(listener.get(), 5) for _ in range(100)]
        assert [e.item_id for e in got if isinstance(e, Final)] == [f"f-{n}" for n in range(100)]
        assert redis.command_calls("evalsha") + redis.command_calls("eval") - before == 1


async def test_two_processes_share_live_events_through_redis(db: str, redis: RedisServer, tmp_path: Path) -> None:
    servers = [
        AppServer.start(db, tmp_path / name, CHATAPP_CHANNELS="redis", CHATAPP_REDIS_URL=redis.url)
        for name in ("a", "b")
    ]
    try:
        a, b = servers
        async with httpx.AsyncClient(base_url=b.url, headers={"X-Forwarded-For": client_ip()}) as on_b:
            await signup(on_b)
            cid = await open_conversation(on_b)
            assert (await ingest(on_b, cid, [event("s-1", "probe-start")])).status_code == 200
            reader = StreamReader(on_b, f"/conversations/{cid}/stream")
            try:
                await asyncio.wait_for(reader.ready.wait(), 10)
                async with httpx.AsyncClient(base_url=a.url) as on_a:
                    long_text = "probe-long " + "wörd " * 1900  # travels in parts, as with NOTIFY
                    response = await ingest(on_a, cid, [event("p-1", "probe-p1 via A"), event("p-2", long_text)])
                    assert response.status_code == 200
                await reader.wait_for((await stored_seqs(cid))[-1])
            finally:
                await reader.close()
        texts = [e.data for e in reader.events]
        assert any("probe-p1 via A" in text for text in texts)
        assert [text.count("wörd") for text in texts if "probe-long" in text] == [1900]
    finally:
        for server in servers:
            server.stop()


async def health(client: httpx.AsyncClient) -> tuple[int, str]:
    response = await client.get("/healthz")
    return response.status_code, response.json()["status"]


async def until_health(client: httpx.AsyncClient, wanted: tuple[int, str], timeout: float) -> float:
    started = time.monotonic()
    while (got := await health(client)) != wanted:
        assert time.monotonic() - started < timeout, got
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def test_healthz_reports_a_dead_redis_and_streams_replay_after_it_is_back(
    db: str, redis: RedisServer, tmp_path: Path
) -> None:
    server = AppServer.start(db, tmp_path / "app", CHATAPP_CHANNELS="redis", CHATAPP_REDIS_URL=redis.url)
    try:
        async with httpx.AsyncClient(base_url=server.url, headers={"X-Forwarded-For": client_ip()}) as http:
            await signup(http)
            cid = await open_conversation(http)
            assert (await ingest(http, cid, [event("b-1", "probe-before")])).status_code == 200
            before = StreamReader(http, f"/conversations/{cid}/stream")
            await asyncio.wait_for(before.ready.wait(), 10)

            stored_before = len(await stored_seqs(cid))
            redis.stop()
            noticed = await until_health(http, (503, "live events unavailable"), 15)
            await asyncio.wait_for(before.task, 5)  # the lost subscription ended the stream: the client replays
            assert (await http.get("/readyz")).status_code == 503
            # Sent while Redis is away: the write stands (published after the commit), the request says the
            # outage (503) so the sender retries, and a retry is a no-op (idempotent by item id).
            response = await ingest(http, cid, [event("d-1", "probe-during the outage")])
            assert response.status_code == 503
            assert len(await stored_seqs(cid)) == stored_before + 1

            redis.start()
            back = await until_health(http, (200, "ok"), 15)
            print(f"\nRedis killed: /healthz 503 after {noticed:.1f} s; back: 200 after {back:.1f} s")
            after = StreamReader(http, f"/conversations/{cid}/stream")
            try:
                stored = await stored_seqs(cid)
                await after.wait_for(stored[-1])
                texts = " ".join(e.data for e in after.events)
                assert "probe-before" in texts
                assert "probe-during the outage" in texts
                response = await ingest(http, cid, [event("a-1", "probe-after")])
                assert response.json() == {"stored": 1, "ignored": 0}
                await after.wait_for((await stored_seqs(cid))[-1])
                assert sum("probe-during" in e.data for e in after.events) == 1
            finally:
                await after.close()
    finally:
        server.stop()
