"""Issue 16's server side over real HTTP: caching, compression, the favicon, logged-out htmx posts, the
history range errors and revoked share links."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from chatapp.accounts.service import get_user
from chatapp.core.database import connection
from chatapp.core.paths import STATIC_DIR
from chatapp.history import sharing
from tests.factories import make_saved
from tests.support import AppServer, csrf_from, signup

CONVERSATION = re.compile(r'data-conversation-id="([0-9a-f-]{36})"')


async def test_private_pages_are_not_stored_and_static_files_are_versioned(client: httpx.AsyncClient) -> None:
    await signup(client)
    for path in ("/", "/history"):
        response = await client.get(path)
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-store"
    page = (await client.get("/")).text
    version = hashlib.sha256((STATIC_DIR / "app.css").read_bytes()).hexdigest()[:12]
    assert f'href="/static/app.css?v={version}"' in page
    assert 'rel="icon" href="/static/favicon.svg?v=' in page

    versioned = await client.get(f"/static/app.css?v={version}")
    assert versioned.headers["cache-control"] == "public, max-age=31536000, immutable"
    for stale in ("/static/app.css", "/static/app.css?v=0123456789ab"):
        assert (await client.get(stale)).headers["cache-control"] == "no-cache"


async def test_favicon_and_compression_but_not_for_the_stream(client: httpx.AsyncClient) -> None:
    icon = await client.get("/favicon.ico")
    assert icon.status_code == 200
    assert icon.headers["content-type"].startswith("image/svg+xml")
    assert b"<svg" in icon.content

    await signup(client)
    page = await client.get("/", headers={"Accept-Encoding": "gzip"})
    assert page.headers["content-encoding"] == "gzip"
    assert "chat-panel" in page.text
    script = await client.get("/static/app.js", headers={"Accept-Encoding": "gzip"})
    assert script.headers["content-encoding"] == "gzip"

    match = CONVERSATION.search(page.text)
    assert match
    async with client.stream(
        "GET", f"/conversations/{match.group(1)}/stream", headers={"Accept-Encoding": "gzip"}
    ) as stream:
        assert stream.status_code == 200
        assert "content-encoding" not in stream.headers
        assert stream.headers["content-type"].startswith("text/event-stream")


async def test_an_htmx_post_after_logout_is_a_401_toast_with_a_login_link(
    client: httpx.AsyncClient, app_server: AppServer
) -> None:
    await signup(client)
    page = (await client.get("/")).text
    token = csrf_from(page)
    match = CONVERSATION.search(page)
    assert match
    await client.post("/logout", data={"_csrf_token": token})
    response = await client.post(
        f"/conversations/{match.group(1)}/messages",
        data={"_csrf_token": token, "text": "still there?"},
        headers={"HX-Request": "true", "HX-Current-URL": f"{app_server.url}/?x=1", "x-csrftoken": token},
    )
    assert response.status_code == 401
    assert response.headers["hx-reswap"] == "none"
    trigger = response.headers["hx-trigger"]
    assert "You were logged out" in trigger.encode().decode("unicode_escape")
    assert '"link": "/login?next=%2F%3Fx%3D1"' in trigger
    # A plain browser request still goes to the login page.
    plain = await client.get("/history")
    assert plain.status_code == 303
    assert plain.headers["location"] == "/login?next=%2Fhistory"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"from": "banana"}, "From must be a date (YYYY-MM-DD)."),
        ({"to": "9999-12-31"}, "To must be between 0001-01-02 and 9999-12-30."),
        ({"from": "2024-05-10", "to": "2024-05-01"}, "From must be on or before To."),
    ],
)
async def test_a_bad_history_range_is_an_inline_error(
    client: httpx.AsyncClient, query: dict[str, str], message: str
) -> None:
    await signup(client)
    page = await client.get("/history", params=query)
    assert page.status_code == 400
    assert message in page.text
    assert 'id="search-q"' in page.text  # the whole page, with its form, not an error page
    assert 'aria-invalid="true"' in page.text
    # The htmx search gets a 200 (htmx swaps no 4xx) with the error out of band next to the fields.
    fragment = await client.get(
        "/history", params=query, headers={"HX-Request": "true", "HX-Target": "history-results"}
    )
    assert fragment.status_code == 200
    assert 'id="range-error"' in fragment.text
    assert 'hx-swap-oob="true"' in fragment.text
    assert message in fragment.text
    assert 'id="search-q"' not in fragment.text


async def test_empty_results_say_why(client: httpx.AsyncClient) -> None:
    email = await signup(client)
    async with connection() as conn:
        user = await get_user(await conn.fetchval("SELECT id FROM user_account WHERE email = $1", email))
    assert user is not None
    assert "No saved conversations yet" in (await client.get("/history")).text
    await make_saved(user, "Trip to Kyoto", datetime.now(UTC) - timedelta(hours=1))
    in_range = await client.get("/history", params={"from": "2001-01-01", "to": "2001-01-31"})
    assert in_range.status_code == 200
    assert "No conversations in this range." in in_range.text
    assert (
        "No conversations match “lima” in this range."
        in (await client.get("/history", params={"q": "lima", "from": "2001-01-01"})).text
    )


async def test_a_revoked_share_link_is_410_and_an_unknown_one_404(client: httpx.AsyncClient) -> None:
    email = await signup(client)
    async with connection() as conn:
        user = await get_user(await conn.fetchval("SELECT id FROM user_account WHERE email = $1", email))
    assert user is not None
    saved = await make_saved(user, "Shared", datetime.now(UTC) - timedelta(hours=1))
    token = await sharing.create(saved)
    await sharing.revoke(saved)
    async with httpx.AsyncClient(base_url=str(client.base_url)) as stranger:
        gone = await stranger.get(f"/s/{token}")
        assert gone.status_code == 410
        assert "revoked" in gone.text
        assert "Back to chat" not in gone.text
        assert (await stranger.get("/s/no-such-link")).status_code == 404
