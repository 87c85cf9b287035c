"""Bad input at every door of the real server: a clear 4xx with a message, never a 500, and nothing changed."""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
import pytest_asyncio

from chatapp.accounts.service import User
from chatapp.conversations.agent_access import ingest_token
from chatapp.core.database import connection
from chatapp.history.search import _encode as encode_search_cursor
from chatapp.history.service import encode_cursor
from tests.factories import make_saved
from tests.support import (
    PASSWORD,
    SECRET_KEY,
    AppServer,
    client_ip,
    csrf,
    event,
    form_token,
    htmx,
    ingest,
    open_conversation,
    signup,
    snapshot,
    unique_email,
)

Send = Callable[[httpx.AsyncClient, uuid.UUID, str], Awaitable[httpx.Response]]


def message_of(response: httpx.Response) -> str:
    """What the person (or API client) is told: JSON detail, the htmx toast, or the page."""
    if response.headers.get("content-type", "").startswith("application/json"):
        return str(response.json()["detail"])
    if "hx-trigger" in response.headers:
        return str(json.loads(response.headers["hx-trigger"])["toast"]["message"])
    return response.text


async def me(client: httpx.AsyncClient) -> User:
    email = await signup(client)
    async with connection() as conn:
        row = await conn.fetchrow("SELECT id, email, display_name FROM user_account WHERE email = $1", email)
    assert row is not None
    return User(**row)


def bearer(conversation_id: uuid.UUID) -> dict[str, str]:
    return {"Authorization": f"Bearer {ingest_token(SECRET_KEY, conversation_id)}"}


# ---- 1. control characters, at every input ----


async def via_save_api(client: httpx.AsyncClient, cid: uuid.UUID, text: str) -> httpx.Response:
    body = {"session_id": str(cid), "messages": [{"role": "user", "text": text}]}
    return await client.post("/api/users/sessions/save", json=body, headers=csrf(client))


async def via_ingest(client: httpx.AsyncClient, cid: uuid.UUID, text: str) -> httpx.Response:
    return await ingest(client, cid, [event("bad-1", text)])


async def via_typed(client: httpx.AsyncClient, cid: uuid.UUID, text: str) -> httpx.Response:
    return await client.post(f"/conversations/{cid}/messages", data={"text": text}, headers=htmx(client))


async def via_dictation(client: httpx.AsyncClient, cid: uuid.UUID, text: str) -> httpx.Response:
    body = {"item_id": "d-1", "text": text, "final": True}
    return await client.post(f"/conversations/{cid}/dictation", json=body, headers=csrf(client))


async def via_rename(client: httpx.AsyncClient, cid: uuid.UUID, text: str) -> httpx.Response:
    return await client.post(f"/history/{cid}/rename", data={"title": text}, headers=htmx(client))


async def via_search(client: httpx.AsyncClient, cid: uuid.UUID, text: str) -> httpx.Response:
    return await client.get("/history", params={"q": text})


TEXT_INPUTS: dict[str, Send] = {
    "save api": via_save_api,
    "ingest": via_ingest,
    "typed message": via_typed,
    "dictation": via_dictation,
    "rename": via_rename,
    "search": via_search,
}


@pytest.mark.parametrize("text", ["before\x00after", "bell\x07", "esc\x1b[31mred", "del\x7f", "c1\x85"])
@pytest.mark.parametrize("route", TEXT_INPUTS)
async def test_control_characters_are_refused_with_422(client: httpx.AsyncClient, route: str, text: str) -> None:
    user = await me(client)
    if route == "rename":
        cid = await make_saved(user, "Old title", datetime.now(UTC))
    else:
        cid = await open_conversation(client)
    before = await snapshot(cid)

    response = await TEXT_INPUTS[route](client, cid, text)

    assert response.status_code == 422, response.text
    assert "must not contain control characters" in message_of(response)
    assert await snapshot(cid) == before


async def test_newlines_and_tabs_are_still_text(client: httpx.AsyncClient) -> None:
    await signup(client)
    cid = await open_conversation(client)
    response = await via_ingest(client, cid, "line one\r\nline\ttwo")
    assert response.status_code == 200
    assert (await snapshot(cid))[1] == [("bad-1", "user", "line one\r\nline\ttwo")]


async def test_a_display_name_with_a_nul_is_a_form_error(client: httpx.AsyncClient) -> None:
    email = unique_email()
    token = await form_token(client, "/signup")
    response = await client.post(
        "/signup",
        data={"_csrf_token": token, "email": email, "display_name": "Ada\x00", "password": PASSWORD},
    )
    assert response.status_code == 422
    assert "Your name must not contain control characters." in response.text
    async with connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM user_account WHERE email = $1", email) == 0


async def test_a_next_target_with_control_characters_goes_home(client: httpx.AsyncClient) -> None:
    token = await form_token(client, "/signup")
    response = await client.post(
        "/signup",
        data={
            "_csrf_token": token,
            "email": unique_email(),
            "display_name": "Ada",
            "password": PASSWORD,
            "next": "/history\r\nSet-Cookie: x=1\x00",
        },
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/"


async def test_a_share_token_with_a_nul_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/s/%00abc")
    assert response.status_code == 404


# ---- 2. item ids leave room for the server's prefix ----


async def test_a_dictation_id_too_long_once_prefixed_is_refused_and_saving_still_works(
    client: httpx.AsyncClient,
) -> None:
    await signup(client)
    cid = await open_conversation(client)
    url = f"/conversations/{cid}/dictation"
    too_long = await client.post(url, json={"item_id": "x" * 128, "text": "interim"}, headers=csrf(client))
    assert too_long.status_code in (400, 422)
    assert "item_id" in message_of(too_long)
    longest = "y" * (128 - len("dictation-"))
    fits = await client.post(url, json={"item_id": longest, "text": "still talking"}, headers=csrf(client))
    assert fits.status_code == 204

    saved = await client.post("/conversations/new", data={"conversation_id": str(cid)}, headers=htmx(client))

    assert saved.status_code == 200, saved.text  # the buffer held no id the column cannot take
    rows = (await snapshot(cid))[1]
    assert [r[0] for r in rows if r[1] == "user"] == [f"dictation-{longest}"]


# ---- 3. timestamps UTC or PostgreSQL cannot hold ----

BAD_TIMESTAMPS: list[object] = [
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    253_402_300_800_000,  # year 10000 in epoch milliseconds
    10**30,
]


@pytest.mark.parametrize("timestamp", BAD_TIMESTAMPS, ids=str)
async def test_timestamps_out_of_range_are_refused(client: httpx.AsyncClient, timestamp: object) -> None:
    await signup(client)
    cid = await open_conversation(client)
    before = await snapshot(cid)

    saved = await client.post(
        "/api/users/sessions/save",
        json={"session_id": str(cid), "messages": [{"role": "user", "text": "hi", "timestamp": timestamp}]},
        headers=csrf(client),
    )
    ingested = await ingest(client, cid, [event("t-1", "hi") | {"timestamp": timestamp}])

    assert saved.status_code == 422, saved.text
    assert "messages[0].timestamp" in message_of(saved)
    assert ingested.status_code in (400, 422), ingested.text
    assert "timestamp" in message_of(ingested)
    assert await snapshot(cid) == before


# ---- 4. cursors and date ranges ----

PLUS_14, MINUS_14 = timezone(timedelta(hours=14)), timezone(timedelta(hours=-14))
EDGE_TIMES = [datetime(1, 1, 1, tzinfo=PLUS_14), datetime(9999, 12, 31, 23, 59, 59, tzinfo=MINUS_14)]


def b64(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


LIST_CURSORS = [encode_cursor(t, uuid.uuid4()) for t in EDGE_TIMES] + [
    b64("[1, 2]"),
    b64('["2024-01-01T00:00:00+00:00", 5]'),
    b64("[" * 5000 + "]" * 5000),
    "%%%",
]
SEARCH_CURSORS = [
    *(encode_search_cursor(None, (1.0, t, uuid.uuid4())) for t in EDGE_TIMES),
    *(encode_search_cursor((t, uuid.uuid4()), None) for t in EDGE_TIMES),
    b64(f'[null, [{10**400}, "2024-01-01T00:00:00+00:00", "{uuid.uuid4()}"]]'),
    b64(f'[{10**400}, "2024-01-01T00:00:00+00:00", "{uuid.uuid4()}"]'),
    b64('[1, "2024-01-01", {}]'),
    b64("[" * 5000 + "]" * 5000),
]


async def test_crafted_and_malformed_cursors_are_400(client: httpx.AsyncClient) -> None:
    await signup(client)
    for cursor in LIST_CURSORS:
        page = await client.get("/history", params={"cursor": cursor})
        assert page.status_code == 400, cursor
        assert "Invalid cursor" in page.text
        api = await client.get("/api/users/sessions", params={"cursor": cursor})
        assert api.status_code == 400, cursor
        assert api.json() == {"detail": "Invalid cursor.", "status_code": 400}
    for cursor in SEARCH_CURSORS:
        found = await client.get("/history", params={"q": "x", "cursor": cursor})
        assert found.status_code == 400, cursor
        assert "Invalid cursor" in found.text


@pytest.mark.parametrize("params", [{"to": "9999-12-31"}, {"from": "0001-01-01"}, {"q": "x", "to": "9999-12-31"}])
async def test_dates_at_the_edge_of_the_calendar_are_400(client: httpx.AsyncClient, params: dict[str, str]) -> None:
    await signup(client)
    client.cookies.set("tz", "Pacific/Kiritimati")  # UTC+14: the day's start is a day earlier in UTC
    response = await client.get("/history", params=params)
    assert response.status_code == 400
    assert "must be between 0001-01-02 and 9999-12-30" in response.text


@pytest.mark.parametrize("zone", ["Pacific/Kiritimati", "Etc/GMT+12", "Asia/Manila"])
async def test_the_first_and_last_allowed_dates_work_in_every_zone(client: httpx.AsyncClient, zone: str) -> None:
    await signup(client)
    client.cookies.set("tz", zone)
    for params in ({"from": "0001-01-02", "to": "9999-12-30"}, {"q": "x", "from": "0001-01-02", "to": "9999-12-30"}):
        assert (await client.get("/history", params=params)).status_code == 200


# ---- 5. deeply nested JSON ----


def nested(prefix: bytes, depth: int = 100_000) -> bytes:
    return prefix + b"[" * depth + b"]" * depth + b"}"


async def test_json_nested_100000_deep_is_400(client: httpx.AsyncClient) -> None:
    await signup(client)
    cid = await open_conversation(client)
    before = await snapshot(cid)
    json_headers = {"Content-Type": "application/json"}
    save = await client.post(
        "/api/users/sessions/save",
        content=nested(f'{{"session_id": "{cid}", "messages": '.encode()),
        headers=csrf(client) | json_headers,
    )
    ingested = await client.post(
        f"/api/conversations/{cid}/events",
        content=nested(b'{"events": '),
        headers=bearer(cid) | json_headers,
    )
    for response in (save, ingested):
        assert response.status_code == 400, response.text
        assert response.json() == {"detail": "The JSON body is nested too deeply.", "status_code": 400}
    assert await snapshot(cid) == before


# ---- 6. SSE resume cursors ----


@pytest.mark.parametrize(
    ("headers", "params"),
    [
        ({b"Last-Event-ID": "²".encode("latin-1")}, {}),  # str.isdigit() is true, int() fails
        ({b"Last-Event-ID": b"99999999999999999999"}, {}),
        ({b"Last-Event-ID": b"2147483648"}, {}),
        ({b"Last-Event-ID": b"-1"}, {}),
        ({}, {"after": "99999999999999999999"}),
        ({}, {"after": "2147483648"}),
    ],
    ids=["superscript", "huge-header", "int4-overflow-header", "negative-header", "huge-after", "int4-after"],
)
async def test_a_bad_resume_cursor_on_the_stream_is_400(
    client: httpx.AsyncClient, headers: dict[bytes, bytes], params: dict[str, str]
) -> None:
    await signup(client)
    cid = await open_conversation(client)
    response = await client.get(f"/conversations/{cid}/stream", headers=headers, params=params, timeout=5)
    assert response.status_code == 400
    assert "after" in message_of(response) or "Last-Event-ID" in message_of(response)


async def test_the_largest_sequence_number_is_still_a_valid_resume_cursor(client: httpx.AsyncClient) -> None:
    await signup(client)
    cid = await open_conversation(client)
    async with client.stream(
        "GET", f"/conversations/{cid}/stream", headers={"Last-Event-ID": str(2**31 - 1)}, timeout=5
    ) as response:
        assert response.status_code == 200


# ---- 7. content types and encodings ----


@pytest.mark.parametrize("kind", ["json", "multipart"])
async def test_new_chat_with_a_json_or_multipart_body_is_415_and_ends_nothing(
    client: httpx.AsyncClient, kind: str
) -> None:
    await signup(client)
    cid = await open_conversation(client)
    body: dict[str, Any] = (
        {"json": {"conversation_id": str(cid)}}
        if kind == "json"
        else {"files": {"conversation_id": (None, str(cid))}}  # httpx sends multipart/form-data
    )
    response = await client.post("/conversations/new", headers=htmx(client), **body)
    assert response.status_code == 415
    assert message_of(response) == "Send application/x-www-form-urlencoded."
    assert await open_conversation(client) == cid


async def test_json_apis_accept_only_json(client: httpx.AsyncClient) -> None:
    await signup(client)
    cid = await open_conversation(client)
    before = await snapshot(cid)
    plain = {"Content-Type": "text/plain"}
    ingested = await client.post(
        f"/api/conversations/{cid}/events",
        content=json.dumps({"events": [event("p-1", "plain")]}),
        headers=bearer(cid) | plain,
    )
    saved = await client.post(
        "/api/users/sessions/save", content=json.dumps({"session_id": str(cid)}), headers=csrf(client) | plain
    )
    for response in (ingested, saved):
        assert response.status_code == 415, response.text
        assert response.json() == {"detail": "Send application/json.", "status_code": 415}
    assert await snapshot(cid) == before


SNIPPET = re.compile(r'data-testid="snippet">(.*?)</span>', re.S)
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.mark.parametrize("body", [b"text=%FF%FE", b"text=caf\xe9"], ids=["percent-encoded", "raw-latin-1"])
async def test_invalid_utf8_in_a_typed_message_is_400_and_stores_nothing(
    client: httpx.AsyncClient, body: bytes
) -> None:
    await signup(client)
    cid = await open_conversation(client)
    before = await snapshot(cid)
    response = await client.post(f"/conversations/{cid}/messages", content=body, headers=htmx(client) | FORM)
    assert response.status_code == 400
    assert message_of(response) == "The form is not valid UTF-8."
    assert await snapshot(cid) == before


async def test_invalid_utf8_is_400_on_every_form(client: httpx.AsyncClient) -> None:
    user = await me(client)
    saved = await make_saved(user, "Old title", datetime.now(UTC))
    active = await open_conversation(client)
    before = await snapshot(saved), await snapshot(active)
    for path in (f"/history/{saved}/rename", "/conversations/new"):
        response = await client.post(path, content=b"title=%FF&conversation_id=%FF", headers=htmx(client) | FORM)
        assert response.status_code == 400, path
        assert message_of(response) == "The form is not valid UTF-8.", path
    assert (await snapshot(saved), await snapshot(active)) == before
    for path in ("/login", "/signup"):
        token = await form_token(client, path)
        email = unique_email()
        body = f"_csrf_token={token}&email={email}&display_name=%C3%28&password={PASSWORD}".encode()
        response = await client.post(path, content=body, headers=FORM)
        assert response.status_code == 400, path
        assert "The form is not valid UTF-8." in response.text
        async with connection() as conn:
            assert await conn.fetchval("SELECT count(*) FROM user_account WHERE email = $1", email) == 0


# ---- 8. search highlights come only from the search ----


async def test_stored_text_cannot_fake_a_search_highlight(client: httpx.AsyncClient) -> None:
    user = await me(client)
    await make_saved(user, "Dinner", datetime.now(UTC), [("user", "the \x02gotcha\x03 about lasagna tonight")])
    html = (await client.get("/history", params={"q": "lasagna"})).text
    snippets = SNIPPET.findall(html)
    assert len(snippets) == 1
    assert "<mark>lasagna</mark>" in snippets[0]
    assert snippets[0].count("mark>") == 2  # only the real highlight: the old markers made a stray </mark>
    assert "gotcha" in snippets[0]


# ---- 9. another user's conversation ----


async def test_saving_another_users_conversation_is_404(client: httpx.AsyncClient, app_server: AppServer) -> None:
    await signup(client)
    cid = await open_conversation(client)
    before = await snapshot(cid)
    async with httpx.AsyncClient(
        base_url=app_server.url, headers={"X-Forwarded-For": client_ip()}, timeout=10
    ) as other:
        await signup(other)
        response = await other.post("/api/users/sessions/save", json={"session_id": str(cid)}, headers=csrf(other))
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found", "status_code": 404}
    assert await snapshot(cid) == before


# ---- 10. the bad-input table (11.4): sizes, counts, limits, CSRF, content types ----


async def everything_of(user: User) -> tuple[Any, ...]:
    """All a refused request could have changed for `user`: their conversations (ended, title, deleted),
    every utterance in them, their share links, and the number of accounts."""
    async with connection() as conn:
        sessions = await conn.fetch(
            "SELECT id, ended_at, title, last_seq FROM chat_session WHERE owner = $1 ORDER BY id", user.id
        )
        lines = await conn.fetch(
            "SELECT u.session, u.item_id, u.role, u.text FROM utterance u JOIN chat_session s ON s.id = u.session "
            "WHERE s.owner = $1 AND u.role = 'user' ORDER BY u.session, u.seq",
            user.id,
        )
        links = await conn.fetch(
            "SELECT l.token, l.revoked_at FROM share_link l JOIN chat_session s ON s.id = l.session "
            "WHERE s.owner = $1 ORDER BY l.token",
            user.id,
        )
        accounts = await conn.fetchval("SELECT count(*) FROM user_account")
    return [tuple(r) for r in sessions], [tuple(r) for r in lines], [tuple(r) for r in links], accounts


@dataclass
class Scene:
    """A signed-in person with an active conversation (one line said) and a saved one (shared)."""

    client: httpx.AsyncClient
    user: User
    active: uuid.UUID
    saved: uuid.UUID


@pytest_asyncio.fixture(loop_scope="session")
async def scene(client: httpx.AsyncClient) -> Scene:
    user = await me(client)
    saved = await make_saved(user, "Old title", datetime.now(UTC))
    assert (await client.post(f"/history/{saved}/share", headers=htmx(client))).status_code == 200
    active = await open_conversation(client)
    assert (await ingest(client, active, [event("said-1", "already said")])).status_code == 200
    return Scene(client, user, active, saved)


Request = Callable[[Scene], Awaitable[httpx.Response]]
BIG_FORM = "x" * (1024 * 1024 + 1)
URLENCODED = {"Content-Type": "application/x-www-form-urlencoded"}
JSON = {"Content-Type": "application/json"}


def form_post(path: str, fields: Callable[[Scene], dict[str, str]], *, token: bool = True) -> Request:
    """A form POST as htmx sends it (the CSRF header unless `token` is False)."""

    async def send(s: Scene) -> httpx.Response:
        headers = htmx(s.client) if token else {"HX-Request": "true"}
        return await s.client.post(path.format(s=s), data=fields(s), headers=headers)

    return send


def page_form(path: str, fields: Callable[[Scene], dict[str, str]]) -> Request:
    """A form POST as the browser sends a page's form (login, sign-up): the token in the body."""

    async def send(s: Scene) -> httpx.Response:
        token = await form_token(s.client, path)
        return await s.client.post(path, data={"_csrf_token": token, **fields(s)})

    return send


def json_post(path: str, body: Callable[[Scene], Any], *, token: bool = True, bearer_auth: bool = False) -> Request:
    async def send(s: Scene) -> httpx.Response:
        headers = bearer(s.active) if bearer_auth else (csrf(s.client) if token else {})
        return await s.client.post(path.format(s=s), json=body(s), headers=headers)

    return send


def raw_post(path: str, content: bytes, content_type: str, *, bearer_auth: bool = False) -> Request:
    async def send(s: Scene) -> httpx.Response:
        headers = bearer(s.active) if bearer_auth else {**htmx(s.client)}
        return await s.client.post(path.format(s=s), content=content, headers=headers | {"Content-Type": content_type})

    return send


def new_account(s: Scene) -> dict[str, str]:
    return {"email": unique_email(), "display_name": "Bo", "password": PASSWORD}


def ingest_body(events: int, text: str = "hello") -> Callable[[Scene], Any]:
    return lambda s: {"events": [event(f"e-{n}", text) for n in range(events)]}


BAD_REQUESTS: dict[str, tuple[Request, tuple[int, ...], str]] = {
    # oversized bodies: 413 with a message
    "typed message over 1 MB": (
        form_post("/conversations/{s.active}/messages", lambda s: {"text": BIG_FORM}),
        (413,),
        "too large",
    ),
    "rename over 1 MB": (form_post("/history/{s.saved}/rename", lambda s: {"title": BIG_FORM}), (413,), "too large"),
    "new chat over 1 MB": (
        form_post("/conversations/new", lambda s: {"conversation_id": str(s.active), "pad": BIG_FORM}),
        (413,),
        "too large",
    ),
    "sign-up over 1 MB": (page_form("/signup", lambda s: new_account(s) | {"pad": BIG_FORM}), (413,), "too large"),
    "log-in over 1 MB": (
        page_form("/login", lambda s: {"email": s.user.email, "password": PASSWORD, "pad": BIG_FORM}),
        (413,),
        "too large",
    ),
    "dictation over 1 MB": (
        json_post("/conversations/{s.active}/dictation", lambda s: {"item_id": "d-1", "text": BIG_FORM}),
        (413,),
        "too large",
    ),
    "save api over 1 MB": (
        json_post("/api/users/sessions/save", lambda s: {"session_id": str(s.active), "pad": BIG_FORM}),
        (413,),
        "too large",
    ),
    "ingest over 8 MB": (
        json_post(
            "/api/conversations/{s.active}/events",
            lambda s: {"events": [event("big-1", "x")], "pad": "x" * (8 * 1024 * 1024 + 1)},
            bearer_auth=True,
        ),
        (413,),
        "too large",
    ),
    # too many events, too-long text
    "101 events": (
        json_post("/api/conversations/{s.active}/events", ingest_body(101), bearer_auth=True),
        (400, 422),
        "events",
    ),
    "ingest text of 10,001 chars": (
        json_post("/api/conversations/{s.active}/events", ingest_body(1, "x" * 10_001), bearer_auth=True),
        (413, 422),
        "events[0].text is longer than 10,000 characters",
    ),
    "typed text of 10,001 chars": (
        form_post("/conversations/{s.active}/messages", lambda s: {"text": "x" * 10_001}),
        (413, 422),
        "10,000 characters",
    ),
    "dictation of 10,001 chars": (
        json_post("/conversations/{s.active}/dictation", lambda s: {"item_id": "d-1", "text": "x" * 10_001}),
        (413, 422),
        "text is longer than 10,000 characters",
    ),
    "saved message of 10,001 chars": (
        json_post(
            "/api/users/sessions/save",
            lambda s: {"session_id": str(s.active), "messages": [{"role": "user", "text": "x" * 10_001}]},
        ),
        (413, 422),
        "text",
    ),
    # missing CSRF on every form and htmx post: 403, nothing changed
    **{
        f"no CSRF: {name}": (request, (403,), "csrf")
        for name, request in {
            "new chat": form_post("/conversations/new", lambda s: {"conversation_id": str(s.active)}, token=False),
            "typed message": form_post("/conversations/{s.active}/messages", lambda s: {"text": "hi"}, token=False),
            "dictation": json_post(
                "/conversations/{s.active}/dictation", lambda s: {"item_id": "d-1", "text": "hi"}, token=False
            ),
            "retry agent": form_post("/conversations/{s.active}/agent", lambda s: {}, token=False),
            "rename": form_post("/history/{s.saved}/rename", lambda s: {"title": "New"}, token=False),
            "delete": form_post("/history/{s.saved}/delete", lambda s: {}, token=False),
            "share": form_post("/history/{s.saved}/share", lambda s: {}, token=False),
            "revoke share": form_post("/history/{s.saved}/share/revoke", lambda s: {}, token=False),
            "continue": form_post("/history/{s.saved}/continue", lambda s: {}, token=False),
            "log out": form_post("/logout", lambda s: {}, token=False),
            "save api": json_post("/api/users/sessions/save", lambda s: {"session_id": str(s.active)}, token=False),
            "sign-up": form_post("/signup", new_account, token=False),
            "log in": form_post("/login", lambda s: {"email": s.user.email, "password": PASSWORD}, token=False),
        }.items()
    },
    # wrong content types: 415
    "typed message as JSON": (
        raw_post("/conversations/{s.active}/messages", b'{"text": "hi"}', "application/json"),
        (415,),
        "x-www-form-urlencoded",
    ),
    "rename as JSON": (
        raw_post("/history/{s.saved}/rename", b'{"title": "New"}', "application/json"),
        (415,),
        "x-www-form-urlencoded",
    ),
    "rename as multipart": (
        raw_post("/history/{s.saved}/rename", b"--b\r\n\r\n--b--", "multipart/form-data; boundary=b"),
        (415,),
        "x-www-form-urlencoded",
    ),
    "sign-up as JSON": (
        raw_post("/signup", b'{"email": "a@example.com", "password": "x"}', "application/json"),
        (415,),
        "x-www-form-urlencoded",
    ),
    "log-in as multipart": (
        raw_post("/login", b"--b\r\n\r\n--b--", "multipart/form-data; boundary=b"),
        (415,),
        "x-www-form-urlencoded",
    ),
    "dictation as a form": (
        raw_post("/conversations/{s.active}/dictation", b"item_id=d-1&text=hi", "application/x-www-form-urlencoded"),
        (415,),
        "application/json",
    ),
    "save api as a form": (
        raw_post("/api/users/sessions/save", b"session_id=x", "application/x-www-form-urlencoded"),
        (415,),
        "application/json",
    ),
    "ingest as a form": (
        raw_post(
            "/api/conversations/{s.active}/events",
            b"events=1",
            "application/x-www-form-urlencoded",
            bearer_auth=True,
        ),
        (415,),
        "application/json",
    ),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
async def test_the_bad_input_table(scene: Scene, case: str) -> None:
    request, statuses, words = BAD_REQUESTS[case]
    before = await everything_of(scene.user)

    response = await request(scene)

    assert response.status_code in statuses, (response.status_code, response.text[:300])
    told = message_of(response)
    assert words.lower() in told.lower(), told[:300]
    assert "Traceback" not in response.text
    assert await everything_of(scene.user) == before
    assert (await scene.client.get("/")).status_code == 200  # still signed in, the app carries on


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/users/sessions", {"limit": "100000"}),
        ("/api/users/sessions", {"limit": "0"}),
        ("/history", {"q": "x" * 10_000}),
        ("/history", {"q": "lisbon " * 1500}),
    ],
    ids=["huge limit", "zero limit", "q of 10,000 chars", "q of 1,500 words"],
)
async def test_huge_limits_and_search_strings_are_400(
    client: httpx.AsyncClient, path: str, params: dict[str, str]
) -> None:
    await signup(client)
    response = await client.get(path, params=params)
    assert response.status_code == 400, response.text[:300]
    told = message_of(response)
    assert next(iter(params)) in told, told[:300]
    assert "Traceback" not in response.text
