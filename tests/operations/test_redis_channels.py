"""CHATAPP_CHANNELS=redis on the multi-host deployment: live events cross app hosts through the Redis host,
agent leases stay in PostgreSQL, and a Redis host cut off shows on every app host's /healthz until it is back."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
from httpx_sse import aconnect_sse

from chatapp.conversations.agent_access import ingest_token
from tests.support import open_conversation, signup, wait_for
from tests.support_hosts import Deployment, figure


def client_address() -> str:
    value = uuid.uuid4().int
    return f"127.{value % 200 + 20}.{(value >> 8) % 250}.{(value >> 16) % 250 + 2}"


async def test_a_stream_on_one_app_host_gets_what_the_other_stored_through_the_redis_host(
    redis_deployment: Deployment,
) -> None:
    deployment = redis_deployment
    assert deployment.redis is not None
    app1, app2 = deployment.apps["app1"], deployment.apps["app2"]
    async with deployment.client(client_address()) as browser:
        await signup(browser)
        cid = await open_conversation(browser)
        cookie = "; ".join(f"{c.name}={c.value}" for c in browser.cookies.jar)  # Secure cookies, sent by hand
    token = ingest_token(deployment.secret_key, cid)
    seen: list[str] = []
    ready = asyncio.Event()

    async def read() -> None:
        async with (
            httpx.AsyncClient(base_url=app1.url, headers={"Cookie": cookie}) as on_app1,
            aconnect_sse(on_app1, "GET", f"/conversations/{cid}/stream", timeout=httpx.Timeout(30)) as source,
        ):
            ready.set()
            async for sse in source.aiter_sse():
                seen.append(sse.data)

    reader = asyncio.create_task(read())
    try:
        await asyncio.wait_for(ready.wait(), 10)
        await asyncio.sleep(0.3)  # subscribed before it replays: let the replay pass
        published = deployment.redis.calls("evalsha") + deployment.redis.calls("eval")
        async with httpx.AsyncClient(base_url=app2.url) as on_app2:
            events = [{"item_id": f"r-{n}", "role": "user", "text": f"via redis {n}", "final": True} for n in range(3)]
            response = await on_app2.post(
                f"/api/conversations/{cid}/events",
                json={"events": events},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert response.status_code == 200, response.text

        async def arrived() -> bool:
            return all(any(f">via redis {n}<" in data for data in seen) for n in range(3))

        await wait_for(arrived, 5)
        assert deployment.redis.calls("evalsha") + deployment.redis.calls("eval") > published
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    order = [next(i for i, data in enumerate(seen) if f">via redis {n}<" in data) for n in range(3)]
    assert order == sorted(order)
    leases = await deployment.fetch("SELECT count(*) AS n FROM agent_lease WHERE conversation = $1", cid)
    assert leases[0]["n"] == 1  # the agent's lease is a row in PostgreSQL, Redis or not


async def health(url: str) -> int:
    try:
        async with httpx.AsyncClient(timeout=2.0) as http:
            return (await http.get(f"{url}/healthz")).status_code
    except httpx.HTTPError:
        return 0


async def test_a_redis_host_cut_off_turns_healthz_503_on_every_app_host_until_it_is_back(
    redis_deployment: Deployment,
) -> None:
    """No reset reaches the app hosts: their subscription check (a PING every 5 s, answered within 5 s) finds
    the silence; after the reconnection they subscribe again and report healthy."""
    deployment = redis_deployment
    urls = [app.url for app in deployment.apps.values()]
    deployment.cut("redis")
    cut = time.monotonic()
    try:

        async def all_down() -> bool:
            return all(status == 503 for status in await asyncio.gather(*(health(url) for url in urls)))

        await wait_for(all_down, 20)
        noticed = time.monotonic() - cut
    finally:
        deployment.reconnect("redis")
    back_from = time.monotonic()

    async def all_up() -> bool:
        return all(status == 200 for status in await asyncio.gather(*(health(url) for url in urls)))

    await wait_for(all_up, 20)
    back = time.monotonic() - back_from
    figure(
        f"Redis host cut off: /healthz 503 on both app hosts after {noticed:.1f} s; reconnected: 200 after {back:.1f} s"
    )
    assert noticed < 12
