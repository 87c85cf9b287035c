"""A person's visit through nginx over HTTPS to two app hosts on a separate PostgreSQL host: sign-up, chat with
the offline model, the live stream unbuffered, New Chat and history; Secure cookies; rate limits that count the
real client address the proxy saw, whatever the client claims."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid

import httpx
import pytest
from httpx_sse import aconnect_sse

from chatapp.conversations.agent_access import ingest_token
from tests.support import csrf_from, htmx, open_conversation, signup, wait_for
from tests.support_hosts import Deployment, figure

FINALS_TIMED = 20


def client_address() -> str:
    """A loopback address of its own (127.x.y.z all reach the proxy): one person's network."""
    value = uuid.uuid4().int
    return f"127.{value % 200 + 20}.{(value >> 8) % 250}.{(value >> 16) % 250 + 2}"


async def user_id(deployment: Deployment, email: str) -> uuid.UUID:
    rows = await deployment.fetch("SELECT id FROM user_account WHERE email = $1", email)
    return uuid.UUID(str(rows[0]["id"]))


async def roles(deployment: Deployment, cid: uuid.UUID) -> list[tuple[str, str]]:
    rows = await deployment.fetch("SELECT role, text FROM utterance WHERE session = $1 ORDER BY seq", cid)
    return [(row["role"], row["text"]) for row in rows]


async def test_sign_up_over_https_and_http2_marks_cookies_secure_and_stores_the_account(
    deployment: Deployment,
) -> None:
    async with deployment.client(client_address()) as browser:
        page = await browser.get("/signup")
        assert (page.status_code, page.http_version) == (200, "HTTP/2")
        assert page.headers["strict-transport-security"] == "max-age=63072000"
        token = csrf_from(page.text)
        email = f"ops-{uuid.uuid4().hex[:10]}@example.com"
        response = await browser.post(
            "/signup",
            data={"_csrf_token": token, "email": email, "display_name": "Ops Ada", "password": "a long passphrase"},
        )
        assert response.status_code == 303
        assert response.headers["location"] == "/"  # relative: right behind the proxy as on the app host
        cookies = response.headers.get_list("set-cookie")
        session = [cookie for cookie in cookies if not cookie.startswith("csrftoken=")]
        assert session, cookies
        assert all("; Secure" in cookie for cookie in cookies)
        assert all("HttpOnly" in cookie for cookie in session)
        assert (await browser.get("/")).status_code == 200  # logged in: the Secure cookie came back
    rows = await deployment.fetch("SELECT display_name FROM user_account WHERE email = $1", email)
    assert [row["display_name"] for row in rows] == ["Ops Ada"]


async def test_plain_http_is_redirected_to_the_public_https_address(deployment: Deployment) -> None:
    async with httpx.AsyncClient() as plain:
        response = await plain.get(f"{deployment.http_url}/history?q=x")
    assert response.status_code == 301
    assert response.headers["location"] == f"{deployment.url}/history?q=x"


async def test_metrics_stay_on_the_private_network(deployment: Deployment) -> None:
    async with deployment.client(client_address()) as browser:
        assert (await browser.get("/metrics")).status_code == 404
    direct = httpx.get(f"{deployment.apps['app1'].url}/metrics", timeout=5)
    assert direct.status_code == 200
    assert "chatapp_requests_total" in direct.text


async def test_a_typed_message_is_answered_by_the_offline_model_across_both_app_hosts(
    deployment: Deployment,
) -> None:
    """Each request goes to either host (round robin); the message is stored once and answered once."""
    async with deployment.client(client_address()) as browser:
        await signup(browser)
        cid = await open_conversation(browser)
        response = await browser.post(
            f"/conversations/{cid}/messages",
            data={"text": "Plan a weekend in Lisbon", "item_id": uuid.uuid4().hex},
            headers=htmx(browser),
        )
        assert response.status_code in {200, 204}, response.text

        async def answered() -> bool:
            return any(role == "agent" and "Lisbon" in text for role, text in await roles(deployment, cid))

        await wait_for(answered, 15)
    said = await roles(deployment, cid)
    assert [text for role, text in said if role == "user"] == ["Plan a weekend in Lisbon"]
    assert len([text for role, text in said if role == "agent" and "Lisbon" in text]) == 1


async def test_live_events_pass_through_nginx_unbuffered_within_a_fraction_of_a_second(
    deployment: Deployment,
) -> None:
    """Finals posted through the proxy (to either host) reach a stream held open through the proxy at once, in
    order, each once; the same measured on one app host directly is the baseline."""
    async with deployment.client(client_address()) as browser:
        await signup(browser)
        cid = await open_conversation(browser)
        token = ingest_token(deployment.secret_key, cid)
        through_proxy = await time_finals(browser, browser, cid, token, "proxy")
        # The login cookies are Secure (https only): on the private network they are sent by hand.
        cookie = "; ".join(f"{c.name}={c.value}" for c in browser.cookies.jar)
        async with httpx.AsyncClient(base_url=deployment.apps["app2"].url, headers={"Cookie": cookie}) as direct:
            on_one_host = await time_finals(direct, direct, cid, token, "direct")
    p50, worst = statistics.median(through_proxy), max(through_proxy)
    figure(
        f"live event through nginx (HTTP/2, TLS), ingest POST sent -> SSE event: p50 {p50 * 1000:.1f} ms, "
        f"max {worst * 1000:.1f} ms over {FINALS_TIMED}; on one app host directly: p50 "
        f"{statistics.median(on_one_host) * 1000:.1f} ms, max {max(on_one_host) * 1000:.1f} ms"
    )
    assert worst < 1.0
    stored = [text for role, text in await roles(deployment, cid) if role == "user"]
    assert stored == [f"proxy {n}" for n in range(FINALS_TIMED)] + [f"direct {n}" for n in range(FINALS_TIMED)]


async def time_finals(
    reader: httpx.AsyncClient, writer: httpx.AsyncClient, cid: uuid.UUID, token: str, label: str
) -> list[float]:
    """Post FINALS_TIMED finals one by one while reading the stream: the time from sending each POST to its
    event's arrival on the stream (the app publishes after the commit, before it answers the POST)."""
    arrived: dict[str, float] = {}
    ready = asyncio.Event()

    async def read() -> None:
        async with aconnect_sse(reader, "GET", f"/conversations/{cid}/stream", timeout=httpx.Timeout(30)) as src:
            ready.set()
            async for sse in src.aiter_sse():
                for n in range(FINALS_TIMED):
                    if f">{label} {n}<" in sse.data and 'data-final="true"' in sse.data:
                        arrived.setdefault(f"{label} {n}", time.monotonic())

    task = asyncio.create_task(read())
    await asyncio.wait_for(ready.wait(), 10)
    await asyncio.sleep(0.3)  # the stream subscribes before it replays: let it settle
    delays = []
    try:
        for n in range(FINALS_TIMED):
            text = f"{label} {n}"
            event = {"item_id": f"{label}-{n}", "role": "user", "text": text, "final": True}
            sent = time.monotonic()
            response = await writer.post(
                f"/api/conversations/{cid}/events",
                json={"events": [event]},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert response.status_code == 200, response.text

            async def seen(text: str = text) -> bool:
                return text in arrived

            await wait_for(seen, 5)
            delays.append(arrived[text] - sent)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return delays


async def test_new_chat_through_the_proxy_saves_the_conversation_and_history_finds_it(
    deployment: Deployment,
) -> None:
    async with deployment.client(client_address()) as browser:
        email = await signup(browser)
        cid = await open_conversation(browser)
        token = ingest_token(deployment.secret_key, cid)
        events = [
            {"item_id": "u1", "role": "user", "text": "Ideas for a ferry trip around the Azores", "final": True},
            {"item_id": "a1", "role": "agent", "text": "Sail from Ponta Delgada to Horta.", "final": True},
        ]
        posted = await browser.post(
            f"/api/conversations/{cid}/events", json={"events": events}, headers={"Authorization": f"Bearer {token}"}
        )
        assert posted.status_code == 200
        response = await browser.post("/conversations/new", data={"conversation_id": str(cid)}, headers=htmx(browser))
        assert response.status_code == 200, response.text
        assert str(cid) not in response.text.split('id="chat-panel"', 1)[-1][:400]  # a fresh panel

        listing = await browser.get("/history")
        assert "Ideas for a ferry trip around the Azores" in listing.text
        found = await browser.get("/history", params={"q": "ferries"})  # stemmed full-text search
        assert str(cid) in found.text
    owner = await user_id(deployment, email)
    rows = await deployment.fetch(
        "SELECT id, title, ended_at IS NOT NULL AS ended FROM chat_session WHERE owner = $1 ORDER BY started_at", owner
    )
    assert [(row["id"], row["title"], row["ended"]) for row in rows] == [
        (cid, "Ideas for a ferry trip around the Azores", True),
        (rows[1]["id"], None, False),  # the next one, open
    ]


async def test_the_login_rate_limit_counts_the_address_nginx_saw_not_a_forged_header(
    deployment: Deployment,
) -> None:
    """CHATAPP_AUTH_RATE_LIMIT is 3 per minute here. A client changing X-Forwarded-For on every attempt is still
    one address (nginx replaces the header with what it saw); another address keeps its own quota."""
    first, second = client_address(), client_address()
    statuses = []
    async with deployment.client(first) as attacker:
        token = csrf_from((await attacker.get("/login")).text)
        for attempt in range(5):
            response = await attacker.post(
                "/login",
                data={"_csrf_token": token, "email": "nobody@example.com", "password": "wrong password"},
                headers={"X-Forwarded-For": f"203.0.113.{attempt + 1}", "X-Real-IP": f"198.51.100.{attempt + 1}"},
            )
            statuses.append(response.status_code)
    assert statuses[3:] == [429, 429]
    assert 429 not in statuses[:3]
    async with deployment.client(second) as neighbour:
        token = csrf_from((await neighbour.get("/login")).text)
        response = await neighbour.post(
            "/login", data={"_csrf_token": token, "email": "nobody@example.com", "password": "wrong password"}
        )
        assert response.status_code != 429
    keys = {
        row["key"] for row in await deployment.fetch("SELECT key FROM http_session WHERE key LIKE 'ratelimit:login:%'")
    }
    assert {f"ratelimit:login:addr:{first}", f"ratelimit:login:addr:{second}"} <= keys
    assert not [key for key in keys if "203.0.113." in key or "198.51.100." in key or deployment.network.gateway in key]


async def test_requests_were_spread_over_both_app_hosts(deployment: Deployment) -> None:
    async with deployment.client(client_address()) as browser:
        for _ in range(6):
            assert (await browser.get("/healthz")).status_code == 200
    used = deployment.proxy.upstreams_used()
    assert {f"{app.address}:8000" for app in deployment.apps.values()} <= set(used)
    figure(f"requests per app host through nginx so far: {dict(sorted(used.items()))}")


@pytest.mark.slow  # it waits out the app's 15 s ping
async def test_a_quiet_stream_stays_open_through_nginx_past_the_apps_ping(deployment: Deployment) -> None:
    """Nothing happens for two of the app's pings (CHATAPP_SSE_PING_SECONDS): they pass through nginx as they are
    sent (no buffering: the page's watchdog counts on them), and the same connection still delivers the next
    event."""
    ping = float(deployment.settings["CHATAPP_SSE_PING_SECONDS"])
    async with deployment.client(client_address()) as browser:
        await signup(browser)
        cid = await open_conversation(browser)
        pinged = asyncio.Event()
        delivered = asyncio.Event()
        pings: list[float] = []

        async def read() -> None:
            async with browser.stream("GET", f"/conversations/{cid}/stream", timeout=httpx.Timeout(60)) as stream:
                assert stream.http_version == "HTTP/2"
                async for line in stream.aiter_lines():
                    if line == "event: ping":
                        pings.append(time.monotonic())
                        if len(pings) == 2:
                            pinged.set()
                    if pinged.is_set() and ">after the ping<" in line:
                        delivered.set()
                        return

        task = asyncio.create_task(read())
        opened = time.monotonic()
        try:
            await asyncio.wait_for(pinged.wait(), 20)
            quiet = time.monotonic() - opened
            event = {"item_id": "late", "role": "user", "text": "after the ping", "final": True}
            token = ingest_token(deployment.secret_key, cid)
            posted = await browser.post(
                f"/api/conversations/{cid}/events",
                json={"events": [event]},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert posted.status_code == 200
            await asyncio.wait_for(delivered.wait(), 5)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    apart = pings[1] - pings[0]
    figure(
        f"a quiet stream through nginx: pings {apart:.1f} s apart (every {ping:g} s sent), the stream stayed open "
        f"{quiet:.1f} s"
    )
    assert ping * 0.5 < apart < ping * 1.5  # each ping arrives as it is sent, not held in a buffer
    assert [text for role, text in await roles(deployment, cid) if role == "user"] == ["after the ping"]
