"""What operators watch: Prometheus metrics at /metrics, readiness at /readyz, JSON log lines; all against real
`chatapp serve` processes and real PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from httpx_sse import aconnect_sse
from prometheus_client.parser import text_string_to_metric_families

from tests.support import (
    READY,
    ROOT,
    SECRET_KEY,
    AppServer,
    client_ip,
    event,
    free_port,
    htmx,
    ingest,
    open_conversation,
    signup,
)

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
SPOKEN = "Quetzalcoatl marmalade itinerary"  # transcript text that must never reach a label or a log line


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(url: str) -> tuple[str, Samples]:
    """GET /metrics without any cookie (it is public, like /healthz); the text and its samples."""
    async with httpx.AsyncClient(timeout=10.0) as anonymous:
        response = await anonymous.get(f"{url}/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    return response.text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels` (0 when there is none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


async def test_metrics_count_a_message_a_new_chat_an_ingest_and_open_streams(
    app_server: AppServer, client: httpx.AsyncClient
) -> None:
    _, before = await scrape(app_server.url)
    await signup(client)
    cid = await open_conversation(client)
    sent = await client.post(
        f"/conversations/{cid}/messages", data={"text": SPOKEN, "item_id": uuid.uuid4().hex}, headers=htmx(client)
    )
    assert sent.status_code == 204
    new_chat = await client.post("/conversations/new", data={"conversation_id": str(cid)}, headers=htmx(client))
    assert new_chat.status_code == 200
    current = await open_conversation(client)
    final = event("probe-final", SPOKEN)
    assert (await ingest(client, current, [final, event("probe-interim", SPOKEN, final=False)])).status_code == 200
    assert (await ingest(client, current, [final])).status_code == 200  # a repeat: acknowledged, ignored

    async with aconnect_sse(client, "GET", f"/conversations/{current}/stream") as source:
        assert source.response.status_code == 200
        text, during = await scrape(app_server.url)
    assert value(during, "chatapp_sse_streams") >= 1
    _, after = await scrape(app_server.url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("chatapp_new_chat_total", outcome="saved") == 1
    assert delta("chatapp_ingest_events_total", source="api", kind="final", outcome="stored") == 1
    assert delta("chatapp_ingest_events_total", source="api", kind="final", outcome="ignored") == 1
    assert delta("chatapp_ingest_events_total", source="api", kind="interim", outcome="stored") == 1
    assert delta("chatapp_ingest_events_total", source="app", kind="final", outcome="stored") >= 1  # typed text
    assert value(after, "chatapp_active_agents") >= 1  # the new conversation's agent runs in this process
    assert value(after, "chatapp_reaper_actions_total", action="ended") >= 0  # the series exists from the start
    # Request latency per route template: the plugin's histogram, labelled without ids.
    messages = {"path": "/conversations/{conversation_id}/messages", "method": "POST", "status_code": "204"}
    assert delta("chatapp_requests_total", **messages) == 1
    assert delta("chatapp_request_duration_seconds_count", **messages) == 1
    assert not UUID.search(text), "an id leaked into a label"
    assert SPOKEN not in text

    schema = (await client.get("/schema/openapi.json")).json()
    assert not {"/metrics", "/readyz"} & set(schema["paths"])  # (/healthz is documented: see test_api_fuzz)


async def test_readyz_is_ok_on_a_migrated_database(app_server: AppServer) -> None:
    response = httpx.get(f"{app_server.url}/readyz", timeout=10.0)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.fixture
async def unmigrated(db: str) -> AsyncIterator[str]:
    """A new, empty database on the test server: what a deploy that never ran `chatapp migrate` talks to."""
    name = f"unmigrated_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(db)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield re.sub(r"/postgres(\?|$)", rf"/{name}\1", db, count=1)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
def unmigrated_server(unmigrated: str, tmp_path: Path) -> Iterator[AppServer]:
    server = AppServer.start(unmigrated, tmp_path / "app")
    yield server
    server.stop()


async def test_readyz_is_503_while_migrations_are_pending(unmigrated_server: AppServer) -> None:
    # Alive (the process answers, the database too), but not ready: its tables do not exist yet.
    assert httpx.get(f"{unmigrated_server.url}/healthz", timeout=10.0).status_code == 200
    response = httpx.get(f"{unmigrated_server.url}/readyz", timeout=10.0)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "migrations pending"
    migration_ids = sorted(
        re.search(r'^ID = "([^"]+)"', path.read_text(), re.MULTILINE).group(1)  # type: ignore[union-attr]
        for path in (Path(__file__).resolve().parents[2] / "piccolo_migrations").glob("chatapp_*.py")
    )
    assert body["pending"] == migration_ids


@pytest.fixture(scope="module")
def workers(db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    """Two workers behind one port, JSON logs at debug level (the most a log could ever say)."""
    server = AppServer.start(
        db,
        Path(tmp_path_factory.mktemp("workers")),
        CHATAPP_WORKERS="2",
        CHATAPP_CHANNELS="postgres",
        CHATAPP_LOG_FORMAT="json",
        CHATAPP_LOG_LEVEL="debug",
        ready_timeout=READY,
    )
    yield server
    server.stop()


async def test_two_workers_report_one_total_and_log_json_lines_without_transcripts(workers: AppServer) -> None:
    _, before = await scrape(workers.url)
    healthz = {"path": "/healthz", "method": "GET", "status_code": "200"}
    probes = 30
    for _ in range(probes):  # a new connection each: the kernel hands them to either worker
        async with httpx.AsyncClient(timeout=10.0) as fresh:
            assert (await fresh.get(f"{workers.url}/healthz")).status_code == 200
    async with httpx.AsyncClient(base_url=workers.url, headers={"X-Forwarded-For": client_ip()}, timeout=10.0) as c:
        await signup(c)
        cid = await open_conversation(c)
        sent = await c.post(
            f"/conversations/{cid}/messages", data={"text": SPOKEN, "item_id": uuid.uuid4().hex}, headers=htmx(c)
        )
        assert sent.status_code == 204
        assert (await c.get("/history", params={"q": SPOKEN})).status_code == 200  # search words: redacted
    # Whichever worker answers /metrics, it adds up both workers' counts (multiprocess mode).
    for _ in range(6):
        _, after = await scrape(workers.url)
        counted = value(after, "chatapp_requests_total", **healthz) - value(before, "chatapp_requests_total", **healthz)
        assert counted == probes

    lines = [line for line in workers.log_path.read_text().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines if not line.startswith("chatapp serving on ")]
    assert entries, "nothing was logged"
    for entry in entries:
        assert {"time", "level", "logger", "message", "pid"} <= entry.keys()
    access = [e for e in entries if e["logger"] == "uvicorn.access" and e.get("path") == "/healthz"]
    assert len(access) >= probes
    assert {e["status"] for e in access} == {200}
    assert len({e["pid"] for e in entries if e["logger"] == "uvicorn.error"}) >= 2  # both workers logged
    assert any(e.get("path") == "/history?q=<redacted>" for e in entries)
    log_text = workers.log_path.read_text()
    assert all(word not in log_text for word in SPOKEN.split())


LOW_FILES = 64


def _low_open_files_limit() -> None:
    """In the child before exec: the soft limit many systems start services with, scaled down."""
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (LOW_FILES, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


def _open_files_limits(pid: int) -> tuple[int, int]:
    line = next(line for line in Path(f"/proc/{pid}/limits").read_text().splitlines() if "open files" in line)
    soft, hard = line.split()[3:5]
    return int(soft), int(hard)


async def test_a_server_started_with_a_low_open_files_limit_lifts_it_and_holds_more_streams(
    db: str, tmp_path: Path
) -> None:
    port = free_port()
    log_path = tmp_path / "server.log"
    environment = {
        **os.environ,
        "DATABASE_URL": db,
        "CHATAPP_DATA_DIR": str(tmp_path),
        "CHATAPP_LOG_LEVEL": "warning",
        "CHATAPP_ENV_FILE": "/nonexistent",
        "CHATAPP_SECRET_KEY": SECRET_KEY,
        "CHATAPP_WORKERS": "1",
        "CHATAPP_FORWARDED_ALLOW_IPS": "127.0.0.1",
        "CHATAPP_MAX_STREAMS_PER_USER": "1000",
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "chatapp", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_low_open_files_limit,
        )
    server = AppServer(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)
    try:
        server.wait_ready(READY)
        soft, hard = _open_files_limits(process.pid)
        assert soft == hard > LOW_FILES
        streams = LOW_FILES + 16  # more sockets than the limit it was started with
        async with httpx.AsyncClient(
            base_url=server.url,
            headers={"X-Forwarded-For": client_ip()},
            timeout=httpx.Timeout(30.0, read=None),
            limits=httpx.Limits(max_connections=None),
        ) as c:
            await signup(c)
            cid = await open_conversation(c)
            async with contextlib.AsyncExitStack() as stack:
                for _ in range(streams):
                    response = await stack.enter_async_context(c.stream("GET", f"/conversations/{cid}/stream"))
                    assert response.status_code == 200
                _, samples = await scrape(server.url)
                assert value(samples, "chatapp_sse_streams") == streams
    finally:
        server.stop()
