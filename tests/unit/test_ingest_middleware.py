"""The agent's ingest API is bearer-token only: the login session middleware stays off its path (issue 25), so
a POST never reads the session store, even when it carries a cookie."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from chatapp.core.settings import Settings


async def call(app: Any, path: str, headers: list[tuple[bytes, bytes]], method: str = "POST") -> int:
    """One request straight into the ASGI app (no lifespan: nothing is connected), its status."""
    body = b'{"events": [{"item_id": "i-1", "role": "user", "text": "hi", "final": true}]}'
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return messages.pop() if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(scope, receive, send)
    return statuses[0]


# Building the app in-process meets Litestar's notices about parameter styles the app still uses; not this test's.
@pytest.mark.filterwarnings("ignore::litestar.exceptions.LitestarDeprecationWarning")
async def test_an_ingest_post_with_a_cookie_never_reads_the_session_store(monkeypatch: pytest.MonkeyPatch) -> None:
    from chatapp.accounts.session_store import PostgresStore
    from chatapp.app import create_app

    reads: list[str] = []

    async def get(self: PostgresStore, key: str, renew_for: object = None) -> bytes | None:
        reads.append(key)
        return None

    # Recorded rather than read from a database: whichever database an earlier test left configured, none is read.
    monkeypatch.setattr(PostgresStore, "get", get)
    settings = Settings.from_env({"CHATAPP_SECRET_KEY": "x" * 40, "CHATAPP_DATA_DIR": "/nonexistent"})
    app = create_app(settings, dsn="postgresql://nobody@127.0.0.1:1/none")
    cookie = (b"cookie", f"chatapp_session={uuid.uuid4().hex}".encode())
    bearer = (b"authorization", b"Bearer not-the-token")
    # The bearer check answers (401) without the session middleware's store read.
    assert await call(app, f"/api/conversations/{uuid.uuid4()}/events", [cookie, bearer]) == 401
    assert reads == []
    # A page with the same cookie does read it.
    await call(app, "/history", [cookie], method="GET")
    assert len(reads) == 1
