"""Streams belong to a login session: logout ends them, and one user cannot hold unlimited streams open."""

from __future__ import annotations

import asyncio

import httpx

from chatapp.core.settings import Settings
from tests.support import (
    PASSWORD,
    AppServer,
    client_ip,
    csrf_from,
    event,
    form_token,
    ingest,
    open_conversation,
    signup,
)
from tests.support_stream import StreamReader, open_stream


async def logout(client: httpx.AsyncClient) -> None:
    response = await client.post("/logout", data={"_csrf_token": csrf_from((await client.get("/")).text)})
    assert response.status_code == 303


async def login(client: httpx.AsyncClient, email: str) -> None:
    token = await form_token(client, "/login")
    response = await client.post("/login", data={"_csrf_token": token, "email": email, "password": PASSWORD})
    assert response.status_code == 303


async def test_logout_ends_that_sessions_streams_only(client: httpx.AsyncClient, app_server: AppServer) -> None:
    email = await signup(client)
    cid = await open_conversation(client)
    assert (await ingest(client, cid, [event("s-1", "probe-s1")])).status_code == 200
    url = f"/conversations/{cid}/stream"
    async with httpx.AsyncClient(base_url=app_server.url, headers={"X-Forwarded-For": client_ip()}) as laptop:
        await login(laptop, email)  # the same person, logged in elsewhere too
        mine, theirs = await open_stream(client, url), await open_stream(laptop, url)
        try:
            await logout(client)
            await asyncio.wait_for(mine.task, 2)  # ended by the server, not by us
            again = await client.get(url)
            assert again.status_code in (302, 303, 401)
            assert not theirs.task.done()  # the other login session keeps its stream
        finally:
            await mine.close()
            await theirs.close()


async def test_streams_per_user_are_capped(client: httpx.AsyncClient) -> None:
    limit = Settings().max_streams_per_user  # the session's server runs with the default
    await signup(client)
    cid = await open_conversation(client)
    assert (await ingest(client, cid, [event("q-1", "probe-q1")])).status_code == 200
    url = f"/conversations/{cid}/stream"
    readers = [await open_stream(client, url) for _ in range(limit)]
    try:
        refused = await client.get(url, headers={"Accept": "text/event-stream"})
        assert refused.status_code == 429
        assert "Too many live views open" in refused.text
        htmx = await client.get(url, headers={"HX-Request": "true"})
        assert htmx.status_code == 429
        assert "Close some tabs" in htmx.headers["HX-Trigger"]
        await readers.pop().close()
        for _ in range(50):  # the server notices the closed connection shortly after
            reader = StreamReader(client, url)
            try:
                await asyncio.wait_for(reader.ready.wait(), 0.5)
                readers.append(reader)
                break
            except TimeoutError:
                await reader.close()
        else:
            raise AssertionError("a closed stream's place was never freed")
    finally:
        for reader in readers:
            await reader.close()
