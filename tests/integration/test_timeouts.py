"""Read and write timeouts against a real `chatapp serve`, with raw sockets: a request head or body that never
finishes, hundreds of such connections at once, an upload that is slow but steady, and a live stream whose client
stopped reading. The server here has short limits (1 s) so the tests are quick; the defaults are in settings."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from chatapp.core.database import connection
from tests.support import PASSWORD, READY, AppServer, event, form_token, ingest, open_conversation, signup, unique_email

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
WRITE_STALL_TIMEOUT = 1.0
MARGIN = 1.5  # seconds for the server to notice and close on a busy machine
STREAMS = re.compile(r"^chatapp_sse_streams (\S+)$", re.MULTILINE)


@pytest.fixture(scope="module")
def server(db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    server = AppServer.start(
        db,
        Path(tmp_path_factory.mktemp("timeouts")),
        ready_timeout=READY,
        CHATAPP_HEADER_TIMEOUT=str(HEADER_TIMEOUT),
        CHATAPP_BODY_TIMEOUT=str(BODY_TIMEOUT),
        CHATAPP_WRITE_STALL_TIMEOUT=str(WRITE_STALL_TIMEOUT),
        CHATAPP_SIGNUP_RATE_LIMIT="1000/hour",
    )
    yield server
    server.stop()


def address(server: AppServer) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


def until_closed(sock: socket.socket, limit: float = 10.0) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    sock.settimeout(limit)
    began = time.monotonic()
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            received += chunk
    return received, time.monotonic() - began


def test_a_request_head_that_never_ends_is_answered_408_and_closed(server: AppServer) -> None:
    with socket.create_connection(address(server)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        began = time.monotonic()
        for n in range(3 * int(HEADER_TIMEOUT / 0.25)):  # a header line every 0.25 s: never complete
            try:
                sock.sendall(b"X-Slow-%d: 1\r\n" % n)
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.25)
            if time.monotonic() - began > HEADER_TIMEOUT + MARGIN:
                break
        received, _ = until_closed(sock)
    assert received.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - began < HEADER_TIMEOUT + MARGIN + 0.5


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(server: AppServer) -> None:
    with socket.create_connection(address(server)) as sock:
        received, waited = until_closed(sock)
    assert received == b""
    assert HEADER_TIMEOUT * 0.9 < waited < HEADER_TIMEOUT + MARGIN


async def test_hundreds_of_slow_heads_are_all_closed_and_the_server_keeps_answering(server: AppServer) -> None:
    def open_slow() -> socket.socket:
        sock = socket.create_connection(address(server))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        return sock

    sockets = [open_slow() for _ in range(300)]
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            assert (await client.get("/healthz")).status_code == 200  # meanwhile, others are served
        await asyncio.sleep(HEADER_TIMEOUT + MARGIN)
        for sock in sockets:
            sock.setblocking(False)
        still_open = 0
        for sock in sockets:
            try:
                sock.recv(65536)  # the 408, or b"" once closed
                if sock.recv(65536) != b"":
                    still_open += 1
            except BlockingIOError:
                still_open += 1
            except ConnectionResetError:
                pass
        assert still_open == 0
    finally:
        for sock in sockets:
            sock.close()


async def signup_form(server: AppServer) -> tuple[str, bytes]:
    """A fresh visitor's cookie header and a valid sign-up form body (not sent yet)."""
    async with httpx.AsyncClient(base_url=server.url) as visitor:
        token = await form_token(visitor, "/signup")
        cookies = "; ".join(f"{name}={value}" for name, value in visitor.cookies.items())
    email = unique_email()
    form = {"_csrf_token": token, "email": email, "display_name": "Slow Sam", "password": PASSWORD}
    return cookies, urlencode(form).encode()


def post_head(cookies: str, length: int) -> bytes:
    return (
        b"POST /signup HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Cookie: " + cookies.encode() + b"\r\nContent-Length: %d\r\n\r\n" % length
    )


async def account_exists(form: bytes) -> bool:
    email = dict(pair.split("=", 1) for pair in form.decode().split("&"))["email"].replace("%40", "@")
    async with connection() as conn:
        return bool(await conn.fetchval("SELECT count(*) FROM user_account WHERE email = $1", email))


async def test_a_body_that_trickles_in_is_answered_408_and_changes_nothing(server: AppServer) -> None:
    cookies, form = await signup_form(server)

    def trickle() -> tuple[bytes, float]:
        with socket.create_connection(address(server)) as sock:
            sock.sendall(post_head(cookies, len(form)))
            began = time.monotonic()
            for byte in form[:-1]:  # one byte every 0.2 s: 5 bytes a second, never the last one
                try:
                    sock.sendall(bytes([byte]))
                except (BrokenPipeError, ConnectionResetError):
                    break
                time.sleep(0.2)
                if time.monotonic() - began > BODY_TIMEOUT + MARGIN:
                    break
            received, _ = until_closed(sock)
            return received, time.monotonic() - began

    received, took = await asyncio.to_thread(trickle)
    assert received.startswith(b"HTTP/1.1 408 ")
    assert took < BODY_TIMEOUT + MARGIN + 0.5
    assert not await account_exists(form)


async def test_a_slow_but_steady_body_is_received_whole(server: AppServer) -> None:
    """Longer than the body timeout, but never below the minimum rate (1 KiB/s): the sign-up goes through."""
    cookies, form = await signup_form(server)
    form += b"&padding=" + b"x" * (6 * 1024 - len(form) - 9)  # 6 KiB: 1 s + 6 s allowed

    def steady() -> bytes:
        with socket.create_connection(address(server)) as sock:
            sock.sendall(post_head(cookies, len(form)))
            for start in range(0, len(form), 1024):  # 2 KiB a second, for 3 s
                sock.sendall(form[start : start + 1024])
                time.sleep(0.5)
            sock.settimeout(10)
            return sock.recv(65536)

    answer = await asyncio.to_thread(steady)
    assert answer.startswith(b"HTTP/1.1 303 "), answer[:200]
    assert await account_exists(form)


async def open_streams(server: AppServer) -> float:
    async with httpx.AsyncClient() as anonymous:
        text = (await anonymous.get(f"{server.url}/metrics")).text
    match = STREAMS.search(text)
    assert match, text[:500]
    return float(match.group(1))


async def test_a_stream_whose_client_stopped_reading_is_closed(server: AppServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        await signup(client)
        cid = await open_conversation(client)
        cookies = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
        before = await open_streams(server)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window, never read
        sock.connect(address(server))
        try:
            sock.sendall(
                f"GET /conversations/{cid}/stream HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"
                f"Cookie: {cookies}\r\n\r\n".encode()
            )
            await asyncio.sleep(0.5)
            assert await open_streams(server) == before + 1
            text = "a long final to fill the buffers " * 300  # ~10,000 characters
            sent = 0
            began = time.monotonic()
            while await open_streams(server) > before:  # until the server gives up on this reader
                events = [event(f"fill-{uuid.uuid4().hex}", text) for _ in range(50)]
                assert (await ingest(client, cid, events)).status_code == 200
                sent += len(events)
                assert time.monotonic() - began < 20, f"still open after {sent} finals"
            # The other side: everything the server managed to send, then the reset of an aborted connection.
            received, _ = await asyncio.to_thread(until_closed, sock)
            assert received.startswith(b"HTTP/1.1 200 ")
        finally:
            sock.close()
    async with connection() as conn:
        stored = await conn.fetchval("SELECT count(*) FROM utterance WHERE session = $1 AND item_id LIKE 'fill-%'", cid)
    assert stored == sent  # the finals were all stored; only the stalled stream was given up
