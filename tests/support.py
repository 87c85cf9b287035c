"""The test kit shared by unit, integration, e2e tests and the bench: a real app process, ports, signing up,
form and htmx tokens, a conversation over HTTP (open, ingest), waiting, and reading what the database stored.

Streams are in tests/support_stream.py, a PostgreSQL of one's own in tests/support_postgres.py, the agent
forwarder's feeder in tests/support_forwarder.py, fakes (scripted LLM, LiveKit, OpenAI) in tests/fakes/.
Test modules import from here and never from one another (tests/unit/test_test_kit.py checks)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from chatapp.accounts.service import User, get_user
from chatapp.conversations.agent_access import ingest_token
from chatapp.core.database import connection

ROOT = Path(__file__).resolve().parents[1]
CSRF_INPUT = re.compile(r'name="_csrf_token" value="([^"]+)"')
PASSWORD = "correct horse battery staple"
SECRET_KEY = "test-secret-key-for-the-suite-only-0123456789"
READY = 60.0  # seconds for a server to start: imports are slow when the shared machine is busy
ANSWER_WITHIN = 5.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class AppServer:
    """`chatapp serve` in a subprocess: the same command a person runs, against the test database."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(
        cls, dsn: str, data_dir: Path, *, port: int | None = None, ready_timeout: float = 30.0, **env: str
    ) -> AppServer:
        """Start on `port` (a restart on the same address), or on a free one."""
        port = port or free_port()
        data_dir.mkdir(parents=True, exist_ok=True)
        log_path = data_dir / f"server-{port}.log"
        environment = {
            **os.environ,
            "DATABASE_URL": dsn,
            "CHATAPP_DATA_DIR": str(data_dir),
            "CHATAPP_TEST_FAULTS": "1",
            "CHATAPP_FORWARDED_ALLOW_IPS": "127.0.0.1",
            "CHATAPP_LOG_LEVEL": "warning",
            "CHATAPP_ENV_FILE": "/nonexistent",
            "CHATAPP_SECRET_KEY": SECRET_KEY,
            "CHATAPP_WORKERS": "1",  # one process per AppServer: its fault switches and agents are all in it
            **env,
        }
        log = log_path.open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "chatapp", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        server = cls(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)
        try:
            server.wait_ready(ready_timeout)
        except RuntimeError:
            server.stop()
            raise
        return server

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"app server exited early:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"app server did not become ready:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def app_pair(db: str, root: Path, **env: str) -> Iterator[tuple[AppServer, AppServer]]:
    """Two app processes, A and B, on one database with the same settings (`env`), stopped afterwards."""
    servers: list[AppServer] = []
    try:
        for name in ("a", "b"):
            servers.append(AppServer.start(db, root / name, ready_timeout=READY, **env))
        yield servers[0], servers[1]
    finally:
        for server in servers:
            server.stop()


def unique_email() -> str:
    return f"user-{uuid.uuid4().hex[:12]}@example.com"


def client_ip() -> str:
    """A distinct client address per test (the server trusts X-Forwarded-For from 127.0.0.1)."""
    value = uuid.uuid4().int
    return f"10.{value % 250}.{(value >> 8) % 250}.{(value >> 16) % 250 + 1}"


def csrf_from(html: str) -> str:
    match = CSRF_INPUT.search(html)
    assert match, "page has no CSRF input"
    return match.group(1)


async def form_token(client: httpx.AsyncClient, path: str = "/login") -> str:
    response = await client.get(path)
    return csrf_from(response.text)


async def signup(client: httpx.AsyncClient, email: str | None = None, display_name: str = "Ada Traveller") -> str:
    """Sign up through the real form; the client keeps the login cookie. Returns the email."""
    email = email or unique_email()
    token = await form_token(client, "/signup")
    response = await client.post(
        "/signup",
        data={"_csrf_token": token, "email": email, "display_name": display_name, "password": PASSWORD},
    )
    assert response.status_code == 303, response.text
    return email


# ---- conversations over HTTP ----


CONVERSATION_ID = re.compile(r'id="chat-panel"[^>]*data-conversation-id="([0-9a-f-]{36})"')


async def open_conversation(client: httpx.AsyncClient) -> uuid.UUID:
    page = await client.get("/")
    assert page.status_code == 200
    match = CONVERSATION_ID.search(page.text)
    assert match, "chat page shows no conversation"
    return uuid.UUID(match.group(1))


async def ingest(
    client: httpx.AsyncClient, conversation_id: uuid.UUID, events: list[dict[str, object]]
) -> httpx.Response:
    return await client.post(
        f"/api/conversations/{conversation_id}/events",
        json={"events": events},
        headers={"Authorization": f"Bearer {ingest_token(SECRET_KEY, conversation_id)}"},
    )


def event(item_id: str, text: str, role: str = "user", final: bool = True) -> dict[str, object]:
    return {"item_id": item_id, "role": role, "text": text, "final": final}


# ---- history pages and a second person ----

ITEM = re.compile(r'data-testid="history-item" data-conversation-id="([0-9a-f-]{36})"')


NEXT = re.compile(r'hx-get="(/history\?[^"]*cursor=[^"]+)"')


@contextlib.asynccontextmanager
async def person(app_server: AppServer) -> AsyncIterator[tuple[httpx.AsyncClient, User]]:
    async with httpx.AsyncClient(base_url=app_server.url, headers={"X-Forwarded-For": client_ip()}, timeout=10) as c:
        email = await signup(c)
        async with connection() as conn:
            user_id = await conn.fetchval("SELECT id FROM user_account WHERE email = $1", email)
        user = await get_user(user_id)
        assert user is not None
        yield c, user


# ---- a browser on several app processes, and waiting ----


def browser() -> httpx.AsyncClient:
    """One person's browser: the cookies (session, CSRF) work on every app process (same host, one database)."""
    return httpx.AsyncClient(headers={"X-Forwarded-For": client_ip()}, timeout=10.0)


def htmx(client: httpx.AsyncClient) -> dict[str, str]:
    """The headers of an htmx request with the CSRF token from the client's cookie."""
    return {"HX-Request": "true", "x-csrftoken": str(client.cookies.get("csrftoken"))}


def csrf(client: httpx.AsyncClient) -> dict[str, str]:
    """The CSRF header alone (a plain, non-htmx form or JSON request)."""
    return {"x-csrftoken": str(client.cookies.get("csrftoken"))}


async def wait_for(condition: object, timeout: float = ANSWER_WITHIN) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if await condition():  # type: ignore[operator]
            return
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def greeted(cid: uuid.UUID) -> None:
    """The agent's greeting is stored (so what follows is an answer to typed text)."""

    async def done() -> bool:
        return any(role == "agent" for _, role, _ in await utterance_roles(cid))

    await wait_for(done, 10.0)


async def type_text(client: httpx.AsyncClient, server: AppServer, cid: uuid.UUID, text: str) -> str:
    item = uuid.uuid4().hex
    response = await client.post(
        f"{server.url}/conversations/{cid}/messages", data={"text": text, "item_id": item}, headers=htmx(client)
    )
    assert response.status_code == 204, response.text
    return f"typed-{item}"


# ---- what the database stored ----


async def utterance_roles(cid: uuid.UUID) -> list[tuple[int, str, str]]:
    async with connection() as conn:
        found = await conn.fetch("SELECT seq, role, item_id FROM utterance WHERE session = $1 ORDER BY seq", cid)
    return [(r["seq"], r["role"], r["item_id"]) for r in found]


async def idle_for(conversation_id: uuid.UUID, minutes: int) -> None:
    async with connection() as conn:
        await conn.execute(
            "UPDATE chat_session SET last_activity_at = now() - make_interval(mins => $2) WHERE id = $1",
            conversation_id,
            minutes,
        )


async def snapshot(conversation_id: uuid.UUID) -> tuple[Any, ...]:
    """What a bad request could have changed about a conversation: whether it ended, its title, and the
    person's utterances (the in-process agent may greet meanwhile, so its lines are left out)."""
    async with connection() as conn:
        row = await conn.fetchrow("SELECT ended_at, title FROM chat_session WHERE id = $1", conversation_id)
        rows = await conn.fetch(
            "SELECT item_id, role, text FROM utterance WHERE session = $1 AND role = 'user'", conversation_id
        )
    assert row is not None
    return tuple(row), sorted(tuple(r) for r in rows)


async def utterance_texts(conversation_id: uuid.UUID) -> list[tuple[str, str, str]]:
    async with connection() as conn:
        found = await conn.fetch(
            "SELECT item_id, role, text FROM utterance WHERE session = $1 ORDER BY seq", conversation_id
        )
    return [(r["item_id"], r["role"], r["text"]) for r in found]
