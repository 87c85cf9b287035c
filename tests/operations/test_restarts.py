"""Restarts an operator does: a rolling restart of both app hosts, one after the other (`systemctl restart
chatapp` on each: SIGTERM, migrations, serve) while people type and an agent worker posts transcripts, with no
request failing; and the database host restarted, with the app answering 503 quickly while it is down and
serving again soon after it is back, without restarting the app."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from dataclasses import dataclass, field

import httpx
import pytest

from chatapp.conversations.agent_access import ingest_token
from tests.support import htmx, open_conversation, signup, wait_for
from tests.support_hosts import Deployment, figure

pytestmark = pytest.mark.slow

TYPE_EVERY = 1.0  # s between typed messages (the default limit is 60 a minute)
INGEST_EVERY = 0.25  # s between the agent worker's batches


@dataclass
class Traffic:
    """Requests made through the proxy during a disruption, and how each went."""

    sent: int = 0
    failed: list[str] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)  # what the app said it stored
    durations: list[float] = field(default_factory=list)

    async def request(self, label: str, call: object) -> httpx.Response | None:
        self.sent += 1
        started = time.monotonic()
        try:
            response: httpx.Response = await call  # type: ignore[misc]
        except httpx.HTTPError as exc:
            self.failed.append(f"{label}: {type(exc).__name__}")
            return None
        self.durations.append(time.monotonic() - started)
        if response.status_code >= 400:
            self.failed.append(f"{label}: {response.status_code}")
            return None
        return response


async def type_steadily(browser: httpx.AsyncClient, cid: uuid.UUID, traffic: Traffic, stop: asyncio.Event) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        text = f"typed message {n}"
        sent = browser.post(
            f"/conversations/{cid}/messages", data={"text": text, "item_id": uuid.uuid4().hex}, headers=htmx(browser)
        )
        if await traffic.request(text, sent) is not None:
            traffic.acknowledged.append(text)
        await asyncio.sleep(TYPE_EVERY)


async def ingest_steadily(
    worker: httpx.AsyncClient, cid: uuid.UUID, token: str, traffic: Traffic, stop: asyncio.Event
) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        text = f"spoken line {n}"
        events = [{"item_id": f"spoken-{n}", "role": "user", "text": text, "final": True}]
        sent = worker.post(
            f"/api/conversations/{cid}/events", json={"events": events}, headers={"Authorization": f"Bearer {token}"}
        )
        if await traffic.request(text, sent) is not None:
            traffic.acknowledged.append(text)
        await asyncio.sleep(INGEST_EVERY)


async def back_in_rotation(deployment: Deployment, address: str, browser: httpx.AsyncClient) -> float:
    """Until the proxy sends the restarted host requests again: it took the host out for fail_timeout (10 s) when
    connections were refused during the restart. Restarting the next host before that leaves no host at all."""
    started = time.monotonic()
    log = deployment.proxy.access_log
    seen = len(log.read_text().splitlines())
    while not any(f" 200 {address}:" in line for line in log.read_text().splitlines()[seen:]):
        assert time.monotonic() - started < 20, f"the proxy did not take {address} back"
        await browser.get("/readyz")
        await asyncio.sleep(0.25)
    return time.monotonic() - started


async def stored_user_texts(deployment: Deployment, cid: uuid.UUID) -> list[str]:
    rows = await deployment.fetch("SELECT text FROM utterance WHERE session = $1 AND role = 'user' ORDER BY seq", cid)
    return [row["text"] for row in rows]


async def test_a_rolling_restart_of_both_app_hosts_fails_no_request_of_people_typing_or_agents_posting(
    deployment: Deployment,
) -> None:
    async with deployment.client("127.0.0.21") as typist, deployment.client("127.0.0.22") as worker:
        await signup(typist)
        typed_in = await open_conversation(typist)
        await signup(worker)
        spoken_in = await open_conversation(worker)
        token = ingest_token(deployment.secret_key, spoken_in)
        typing, ingesting, stop = Traffic(), Traffic(), asyncio.Event()
        tasks = [
            asyncio.create_task(type_steadily(typist, typed_in, typing, stop)),
            asyncio.create_task(ingest_steadily(worker, spoken_in, token, ingesting, stop)),
        ]
        try:
            await asyncio.sleep(1.0)
            restarts, rejoined = {}, {}
            started = time.monotonic()
            for name, app in deployment.apps.items():  # one after the other, as deploy/README.md says
                restarts[name] = await asyncio.to_thread(app.restart)
                rejoined[name] = await back_in_rotation(deployment, app.address, typist)
            rolling = time.monotonic() - started
            await asyncio.sleep(1.0)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
    assert typing.failed == []
    assert ingesting.failed == []
    assert await stored_user_texts(deployment, typed_in) == typing.acknowledged
    assert await stored_user_texts(deployment, spoken_in) == ingesting.acknowledged

    async def last_answered() -> bool:  # the agent lives on through both restarts and answers the last message
        rows = await deployment.fetch(
            "SELECT role FROM utterance WHERE session = $1 ORDER BY seq DESC LIMIT 1", typed_in
        )
        return bool(rows) and rows[0]["role"] == "agent"

    await wait_for(last_answered, 15)
    slowest = max(typing.durations + ingesting.durations)
    figure(
        f"rolling restart of 2 app hosts (each to /readyz: {', '.join(f'{s:.1f} s' for s in restarts.values())}; "
        f"then back in the proxy's rotation after {', '.join(f'{s:.1f} s' for s in rejoined.values())}; "
        f"{rolling:.1f} s in all) under typing every {TYPE_EVERY} s and ingest every {INGEST_EVERY} s: "
        f"{typing.sent + ingesting.sent} requests, 0 failed, no retries; slowest {slowest:.2f} s, median "
        f"{statistics.median(typing.durations + ingesting.durations) * 1000:.0f} ms"
    )


async def test_a_database_restart_answers_503_quickly_and_recovers_without_restarting_the_app(
    deployment: Deployment,
) -> None:
    pids = {name: app.service.process.pid for name, app in deployment.apps.items() if app.service.process}
    async with deployment.client("127.0.0.23") as browser:
        await signup(browser)
        cid = await open_conversation(browser)
        assert (await browser.get("/history")).status_code == 200

        outage: list[tuple[float, int, float]] = []  # (since the stop began, status, how long it took)
        down: list[float] = []  # when the server had stopped

        async def load_pages() -> None:  # a person's page loads every 0.2 s, from the stop until 2 s after it
            while not down or time.monotonic() - down[0] < 2.0:
                started = time.monotonic()
                response = await browser.get("/history")
                outage.append((started - stopped_at, response.status_code, time.monotonic() - started))
                await asyncio.sleep(0.2)

        stopped_at = time.monotonic()
        loading = asyncio.create_task(load_pages())
        await asyncio.to_thread(deployment.database.stop)
        down.append(time.monotonic())
        await loading
        statuses = [status for _, status, _ in outage]
        assert 503 in statuses
        first = statuses.index(503)
        assert set(statuses[first:]) == {503}  # and never a hang or a 502 while it is down
        assert set(statuses[:first]) <= {200}  # answered before the server went (a fast shutdown takes a moment)
        first_503 = outage[first][0] + outage[first][2]
        slowest_503 = max(took for _, status, took in outage if status == 503)

        await asyncio.to_thread(deployment.database.start)
        back_at = time.monotonic()
        while (await browser.get("/history")).status_code != 200:
            assert time.monotonic() - back_at < 5.0, "not serving 5 s after the database was back"
            await asyncio.sleep(0.1)
        recovered = time.monotonic() - back_at
        sent = await browser.post(
            f"/conversations/{cid}/messages",
            data={"text": "Still there?", "item_id": uuid.uuid4().hex},
            headers=htmx(browser),
        )
        assert sent.status_code in {200, 204}

    async def answered() -> bool:
        rows = await deployment.fetch("SELECT role FROM utterance WHERE session = $1 ORDER BY seq DESC LIMIT 1", cid)
        return bool(rows) and rows[0]["role"] == "agent"

    await wait_for(answered, 15)
    assert {name: app.service.process.pid for name, app in deployment.apps.items() if app.service.process} == pids
    assert first_503 < 5.0
    assert slowest_503 < 5.0
    figure(
        f"database host restarted (fast shutdown; page loads every 0.2 s): 503 from {first_503:.2f} s after the "
        f"stop began ({len(statuses) - first} of them, the slowest in {slowest_503:.2f} s); serving again "
        f"{recovered:.2f} s after PostgreSQL was back, same app processes, the agent answering"
    )
