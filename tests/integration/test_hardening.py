"""Against a real `chatapp serve`: security headers on every response, capped request headers, and an access
log (at info) that holds no search words, share tokens or transcript text."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from chatapp.accounts.service import get_user
from chatapp.core.database import connection
from tests.factories import make_saved
from tests.support import AppServer, client_ip, htmx, open_conversation, signup

SHARE_LINK = re.compile(r'value="http[^"]+(/s/[^"]+)"')


def assert_security_headers(response: httpx.Response) -> None:
    headers = response.headers
    policy = headers["content-security-policy"]
    for directive in [
        "default-src 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "script-src 'self';",
        "style-src 'self';",
    ]:
        assert directive in policy, (response.url, directive)
    assert "unsafe-inline" not in policy
    assert "unsafe-eval" not in policy
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "same-origin"


async def shared_conversation(client: httpx.AsyncClient, email: str, lines: list[tuple[str, str]]) -> str:
    """A saved conversation of the signed-up user, shared; returns the share page's path."""
    async with connection() as conn:
        user_id = await conn.fetchval("SELECT id FROM user_account WHERE email = $1", email)
    user = await get_user(user_id)
    assert user is not None
    cid = await make_saved(user, "Shared trip", datetime.now(UTC), lines)  # type: ignore[arg-type]
    created = await client.post(f"/history/{cid}/share", headers=htmx(client))
    assert created.status_code == 200
    match = SHARE_LINK.search(created.text)
    assert match
    return match.group(1)


async def test_every_response_carries_the_security_headers(client: httpx.AsyncClient) -> None:
    assert_security_headers(await client.get("/login"))
    assert_security_headers(await client.get("/static/app.css"))
    assert_security_headers(await client.get("/no/such/page"))
    assert_security_headers(await client.get("/healthz"))
    docs = await client.get("/schema")  # the OpenAPI viewer loads from a CDN: its own, looser policy
    assert "frame-ancestors 'none'" in docs.headers["content-security-policy"]
    assert "'unsafe-inline'" in docs.headers["content-security-policy"]
    assert docs.headers["x-content-type-options"] == "nosniff"
    api_error = await client.post(f"/api/conversations/{uuid.uuid4()}/events", json={"events": []})
    assert 400 <= api_error.status_code < 500
    assert_security_headers(api_error)
    email = await signup(client)
    assert_security_headers(await client.get("/"))
    assert_security_headers(await client.get("/history"))
    path = await shared_conversation(client, email, [("user", "Road trip in Iceland")])
    async with httpx.AsyncClient(base_url=str(client.base_url)) as stranger:
        assert_security_headers(await stranger.get(path))


async def test_a_forged_host_header_never_reaches_a_share_url(client: httpx.AsyncClient, app_server: AppServer) -> None:
    email = await signup(client)
    async with connection() as conn:
        user = await get_user(await conn.fetchval("SELECT id FROM user_account WHERE email = $1", email))
    assert user is not None
    cid = await make_saved(user, "Shared trip", datetime.now(UTC), [("user", "Hiking in the Dolomites")])  # type: ignore[arg-type]
    forged = {"Host": "evil.example"}
    created = await client.post(f"/history/{cid}/share", headers=htmx(client) | forged)
    page = await client.get(f"/history/{cid}", headers=forged)
    for html in (created.text, page.text):
        urls = re.findall(r'value="(http[^"]+/s/[^"]+)"', html)
        assert urls
        assert all(url.startswith(f"{app_server.url}/s/") for url in urls), urls  # the address it serves
        assert "evil.example" not in html


def raw_request(url: str, header_bytes: int) -> bytes:
    """Send a GET with one header of `header_bytes` and return what the server answers first."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * header_bytes + b"\r\n\r\n"
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # answered and closed before reading it all
            sock.sendall(head)
        return sock.recv(200)


async def test_a_huge_request_header_gets_431_and_the_server_carries_on(app_server: AppServer) -> None:
    assert raw_request(app_server.url, 8_000).startswith(b"HTTP/1.1 200")
    answer = await asyncio.to_thread(raw_request, app_server.url, 1_000_000)
    assert answer.startswith(b"HTTP/1.1 431"), answer
    assert (await asyncio.to_thread(raw_request, app_server.url, 100_000)).startswith(b"HTTP/1.1 431")
    assert httpx.get(f"{app_server.url}/healthz", timeout=5).status_code == 200


def ingest_with_a_wrong_token(url: str, declared: int, sent: int) -> bytes:
    """Start an ingest POST of `declared` bytes with a wrong bearer token, send only `sent` of them, and return
    what the server answers meanwhile (b"" when it is still waiting for the rest of the body)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = (
            f"POST /api/conversations/{uuid.uuid4()}/events HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer wrong\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
        )
        sock.sendall(head.encode() + b'{"events": [' + b" " * (sent - 12))
        sock.settimeout(3.0)
        try:
            return sock.recv(200)
        except TimeoutError:
            return b""


async def test_ingest_refuses_a_wrong_token_before_reading_the_body(app_server: AppServer) -> None:
    answer = await asyncio.to_thread(ingest_with_a_wrong_token, app_server.url, 8 * 1024 * 1024, 64 * 1024)
    assert answer.startswith(b"HTTP/1.1 401"), answer  # answered while 8 MB of body were still to come
    assert httpx.get(f"{app_server.url}/healthz", timeout=5).status_code == 200


@pytest.fixture(scope="module")
def chatty_server(db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    """An app server logging at info, so uvicorn's access log is on."""
    server = AppServer.start(db, Path(tmp_path_factory.mktemp("chatty")), CHATAPP_LOG_LEVEL="info")
    yield server
    server.stop()


async def test_the_log_holds_no_search_words_share_tokens_or_transcript_text(chatty_server: AppServer) -> None:
    secret_word = f"zanzibar{uuid.uuid4().hex[:8]}"
    said = f"Plan my honeymoon in {secret_word}"
    async with httpx.AsyncClient(
        base_url=chatty_server.url, headers={"X-Forwarded-For": client_ip()}, timeout=10
    ) as client:
        email = await signup(client)
        cid = await open_conversation(client)
        sent = await client.post(
            f"/conversations/{cid}/messages", data={"text": said, "item_id": str(uuid.uuid4())}, headers=htmx(client)
        )
        assert sent.status_code == 204
        for _ in range(100):  # the in-process agent answers (and its reply is stored)
            async with connection() as conn:
                replies = await conn.fetchval(
                    "SELECT count(*) FROM utterance WHERE session = $1 AND role = 'agent' AND seq > "
                    "(SELECT seq FROM utterance WHERE session = $1 AND role = 'user' LIMIT 1)",
                    cid,
                )
            if replies:
                break
            await asyncio.sleep(0.05)
        assert replies
        found = await client.get("/history", params={"q": secret_word})
        assert found.status_code == 200
        path = await shared_conversation(client, email, [("user", said)])
        token = path.removeprefix("/s/")
        async with httpx.AsyncClient(base_url=chatty_server.url) as stranger:
            assert (await stranger.get(path)).status_code == 200
    log = chatty_server.log_path.read_text()
    assert '"GET /history?q=<redacted> HTTP/1.1" 200' in log  # the access log is on, and redacted
    assert '"GET /s/<redacted> HTTP/1.1" 200' in log
    assert secret_word not in log
    assert token not in log
    assert "honeymoon" not in log
