"""A database outage answers clear, quick 503s in every format, and the app recovers by itself when it returns."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import AppServer, client_ip, open_conversation, signup
from tests.support_postgres import OwnPostgres, wait_healthy

BOUND = 5.0  # seconds: no request may wait longer than this while the database is down


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
