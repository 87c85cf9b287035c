"""Nothing lost under crashes and outages: the real agent forwarder streams finals into a real app process
while the app is killed (kill -9) or its PostgreSQL stops, and every final ends up stored exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest

from chatapp.core.database import DatabaseUnavailable, connection, is_outage
from tests.support import READY, AppServer, client_ip, htmx, open_conversation, signup
from tests.support_forwarder import FINALS, Feeder, forwarder_for, forwarding
from tests.support_postgres import OwnPostgres, wait_healthy


class Timed(httpx.AsyncHTTPTransport):
    """The forwarder's transport, noting the status (or error) and duration of every request it makes."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: list[tuple[int | str, float]] = []
        self.finals_sent: set[str] = set()  # the item id of every final the forwarder put on the wire

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.finals_sent.update(e["item_id"] for e in json.loads(request.content)["events"] if e["final"])
        began = time.monotonic()
        try:
            response = await super().handle_async_request(request)
        except httpx.TransportError as exc:
            self.answers.append((type(exc).__name__, time.monotonic() - began))
            raise
        self.answers.append((response.status_code, time.monotonic() - began))
        return response


async def stored(cid: uuid.UUID) -> list[tuple[int, str, str]]:
    async with connection() as conn:
        rows = await conn.fetch("SELECT seq, item_id, text FROM utterance WHERE session = $1 ORDER BY seq", cid)
    return [(r["seq"], r["item_id"], r["text"]) for r in rows]


def assert_exactly_once(rows: list[tuple[int, str, str]], feeder: Feeder) -> None:
    """Every final the forwarder was given is stored once, in the order given, under gapless seqs."""
    assert [seq for seq, _, _ in rows] == list(range(1, len(rows) + 1)), "seq has gaps"
    item_ids = [item_id for _, item_id, _ in rows]
    assert len(item_ids) == len(set(item_ids)), "an item is stored twice"
    texts = [text for _, _, text in rows if "of the chaos test" in text or "of the outage test" in text]
    assert len(texts) == len(set(texts)), "a text is stored twice"  # (the offline agent may repeat itself)
    ours = [item_id for item_id in item_ids if item_id in feeder.texts]
    assert ours == feeder.sent, f"missing: {sorted(set(feeder.sent) - set(ours))[:5]}"
    assert {item_id: text for _, item_id, text in rows if item_id in feeder.texts} == feeder.texts


def browser(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, headers={"X-Forwarded-For": client_ip()}, timeout=15.0)


@pytest.mark.slow
async def test_kill_9_mid_stream_loses_and_duplicates_nothing_and_the_chat_still_saves(db: str, tmp_path: Path) -> None:
    server = AppServer.start(db, tmp_path / "app", ready_timeout=READY)
    try:
        timed = Timed()
        async with browser(server.url) as client, httpx.AsyncClient(transport=timed, timeout=5.0) as ingest_client:
            await signup(client)
            cid = await open_conversation(client)
            feeder = Feeder(forwarder_for(server.url, cid, ingest_client))
            async with forwarding(feeder.forwarder) as forwarder:
                crash_now = asyncio.Event()
                feeding = asyncio.create_task(feeder.run(started=crash_now, at=FINALS // 3))
                await crash_now.wait()
                assert forwarder.delivered > 0  # the app really was storing finals when it died
                os.kill(server.process.pid, signal.SIGKILL)
                server.process.wait()
                attempts = forwarder.attempts
                port = int(server.url.rsplit(":", 1)[1])
                server = await asyncio.to_thread(AppServer.start, db, tmp_path / "app", port=port, ready_timeout=READY)
                await feeding
                assert await forwarder.flush(60), f"{forwarder.pending} event(s) still queued"
                assert forwarder.attempts > attempts
                assert forwarder.dropped == 0
                print(f"crash: {forwarder.attempts} forwarder attempts, {forwarder.delivered} events delivered")

            assert timed.finals_sent == set(feeder.sent)  # what the forwarder really sent is what it was fed
            assert_exactly_once(await stored(cid), feeder)
            assert forwarder.delivered >= FINALS

            saved = await client.post("/conversations/new", data={"conversation_id": str(cid)}, headers=htmx(client))
            assert saved.status_code == 200, saved.text
            assert 'Saved · <a href="/history/' in saved.text  # the sidebar's one line
            async with connection() as conn:
                ended = await conn.fetchval("SELECT ended_at IS NOT NULL FROM chat_session WHERE id = $1", cid)
            assert ended
            assert_exactly_once(await stored(cid), feeder)  # saving added or removed nothing
    finally:
        server.stop()
    assert "Traceback" not in server.log_path.read_text()


BOUND = 5.0  # seconds: no request may wait longer than this while the database is down


@dataclass
class Typist:
    """A person typing a message every 0.2 s; remembers what the app acknowledged and every refusal."""

    client: httpx.AsyncClient
    cid: uuid.UUID
    acknowledged: list[str] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)
    slowest: float = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            item = uuid.uuid4().hex
            began = time.monotonic()
            response = await self.client.post(
                f"/conversations/{self.cid}/messages",
                data={"text": f"typed message {n} of the outage test", "item_id": item},
                headers=htmx(self.client),
            )
            self.slowest = max(self.slowest, time.monotonic() - began)
            if 200 <= response.status_code < 300:
                self.acknowledged.append(f"typed-{item}")
            else:
                self.refused.append((response.status_code, response.headers.get("hx-trigger", response.text)))
            n += 1
            await asyncio.sleep(0.2)


async def own_rows(dsn: str, cid: uuid.UUID) -> list[tuple[int, str, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT seq, item_id, text FROM utterance WHERE session = $1 ORDER BY seq", cid)
    finally:
        await conn.close()
    return [(r["seq"], r["item_id"], r["text"]) for r in rows]


@pytest.mark.slow
async def test_postgres_stopped_mid_load_gives_quick_503s_and_loses_nothing(
    own_postgres: OwnPostgres, tmp_path: Path
) -> None:
    server = AppServer.start(
        own_postgres.dsn,
        tmp_path / "app",
        ready_timeout=READY,
        CHATAPP_DB_CONNECT_TIMEOUT="1",
        CHATAPP_DB_STATEMENT_TIMEOUT="2",
    )
    try:
        timed = Timed()
        async with (
            browser(server.url) as client,
            browser(server.url) as probe,
            httpx.AsyncClient(transport=timed, timeout=2 * BOUND) as ingest_client,
        ):
            await signup(client)
            cid = await open_conversation(client)
            feeder = Feeder(forwarder_for(server.url, cid, ingest_client))
            typist = Typist(client, cid)
            stop_typing = asyncio.Event()
            async with forwarding(feeder.forwarder) as forwarder:
                outage = asyncio.Event()
                feeding = asyncio.create_task(feeder.run(started=outage, at=FINALS // 4))
                typing = asyncio.create_task(typist.run(stop_typing))
                await outage.wait()
                before_outage = list(typist.acknowledged)
                assert before_outage
                assert forwarder.delivered > 0
                await asyncio.to_thread(own_postgres.stop)
                try:
                    began = time.monotonic()
                    health = await probe.get("/healthz")
                    assert time.monotonic() - began < BOUND
                    assert health.status_code == 503
                    assert health.json() == {"status": "database unavailable"}
                    refused = len(typist.refused)
                    while len(typist.refused) < refused + 2:  # the typist meets the outage, more than once
                        await asyncio.sleep(0.05)
                finally:
                    await asyncio.to_thread(own_postgres.start)
                assert (await wait_healthy(probe, 20)).status_code == 200  # no restart of the app
                await feeding
                assert await forwarder.flush(60), f"{forwarder.pending} event(s) still queued"
                stop_typing.set()
                await typing
                assert forwarder.dropped == 0
                assert forwarder.attempts > len(feeder.sent) // 100 + 1  # it did have to retry

            rows = await own_rows(own_postgres.dsn, cid)
            assert timed.finals_sent == set(feeder.sent)
            assert_exactly_once(rows, feeder)
            stored_items = [item_id for _, item_id, _ in rows]
            assert [i for i in stored_items if i in set(typist.acknowledged)] == typist.acknowledged
            assert typist.refused
            for status, told in typist.refused:
                assert status == 503, told
                assert "database is unavailable" in told
            assert typist.slowest < BOUND
            # The ingest API answered every request quickly: stored (200) or a clear 503 to retry on.
            assert {status for status, _ in timed.answers} == {200, 503}
            assert max(took for _, took in timed.answers) < BOUND
            print(  # measured figures, shown with -s
                f"outage: {len(typist.acknowledged)} typed acknowledged, {len(typist.refused)} refused (503), "
                f"slowest request {typist.slowest:.2f} s, forwarder attempts {forwarder.attempts}, "
                f"ingest answers {sorted(Counter(status for status, _ in timed.answers).items())}, "
                f"slowest ingest {max(took for _, took in timed.answers):.2f} s"
            )
            # after the outage the app takes typed text again
            assert typist.acknowledged[-1] not in before_outage
    finally:
        server.stop()
    assert "Traceback" not in server.log_path.read_text()


async def test_a_client_side_error_on_a_connection_the_server_closed_is_an_outage(db: str) -> None:
    """What PostgreSQL stopping mid-statement looks like to asyncpg (an InterfaceError or InternalClientError on
    a connection that is now closed) comes out of `connection()` as DatabaseUnavailable: a 503, not a 500."""

    async def lose_the_connection() -> None:
        async with connection() as conn, conn.transaction():
            conn.terminate()  # the server went away under the transaction
            await conn.execute("SELECT 1")

    async def misuse_a_live_connection() -> None:
        async with connection():
            raise asyncpg.InterfaceError("cannot perform operation: another operation is in progress")

    with pytest.raises(DatabaseUnavailable) as caught:
        await lose_the_connection()
    assert is_outage(caught.value)
    assert isinstance(caught.value.__cause__, asyncpg.InterfaceError)
    with pytest.raises(asyncpg.InterfaceError):  # a client-side error on a live connection is still a bug
        await misuse_a_live_connection()
    async with connection() as conn:  # and the pool carries on
        assert await conn.fetchval("SELECT 1") == 1
