"""The account page over HTTP against the real server: rename, password change (other sessions logged out),
download all my data, delete the account with everything it owns."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import uuid
import zipfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx

from chatapp.accounts.service import get_user
from chatapp.core.database import connection
from tests.factories import make_saved
from tests.support import PASSWORD, AppServer, client_ip, form_token, open_conversation, person
from tests.support_stream import open_stream

NEW_PASSWORD = "a much longer new passphrase"


async def post_form(client: httpx.AsyncClient, path: str, data: dict[str, str]) -> httpx.Response:
    return await client.post(path, data={"_csrf_token": await form_token(client, "/account"), **data})


@contextlib.asynccontextmanager
async def logged_in(app_server: AppServer, email: str, password: str = PASSWORD) -> AsyncIterator[httpx.AsyncClient]:
    """A second device: its own cookie jar and address, logged in through the real form."""
    async with httpx.AsyncClient(base_url=app_server.url, headers={"X-Forwarded-For": client_ip()}, timeout=10) as c:
        token = await form_token(c, "/login")
        response = await c.post("/login", data={"_csrf_token": token, "email": email, "password": password})
        assert response.status_code == 303, response.text[:300]
        assert response.headers["location"] == "/"
        yield c


async def is_logged_in(client: httpx.AsyncClient) -> bool:
    response = await client.get("/account")
    return response.status_code == 200


async def session_rows(user_id: object) -> int:
    async with connection() as conn:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM http_session WHERE starts_with(key, $1)", f"session:{user_id.hex}."
            )  # type: ignore[attr-defined]
        )


async def test_changing_the_name_updates_the_account_and_every_session(app_server: AppServer) -> None:
    async with person(app_server) as (client, user), logged_in(app_server, user.email) as other:
        bad = await post_form(client, "/account/name", {"display_name": "  "})
        assert bad.status_code == 422
        assert "Enter the name" in bad.text
        response = await post_form(client, "/account/name", {"display_name": "  Grace   Hopper "})
        assert response.status_code == 303
        page = await client.get(response.headers["location"])
        assert "Your name was changed." in page.text
        assert 'data-testid="user-name" title="Account">Grace Hopper<' in page.text
        assert (await get_user(user.id)).display_name == "Grace Hopper"  # type: ignore[union-attr]
        assert 'data-testid="user-name" title="Account">Grace Hopper<' in (await other.get("/account")).text


async def test_a_password_change_needs_the_current_one_and_logs_out_other_sessions(app_server: AppServer) -> None:
    async with person(app_server) as (client, user):
        async with logged_in(app_server, user.email) as other:
            assert await session_rows(user.id) == 2
            wrong = await post_form(
                client, "/account/password", {"current_password": "not my password", "new_password": NEW_PASSWORD}
            )
            assert wrong.status_code == 422
            assert "not your current password" in wrong.text
            short = await post_form(
                client, "/account/password", {"current_password": PASSWORD, "new_password": "short"}
            )
            assert short.status_code == 422
            assert await is_logged_in(other)

            response = await post_form(
                client, "/account/password", {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
            )
            assert response.status_code == 303
            assert await is_logged_in(client)
            assert not await is_logged_in(other)
            assert await session_rows(user.id) == 1
        async with logged_in(app_server, user.email, NEW_PASSWORD):
            pass
        async with httpx.AsyncClient(base_url=app_server.url, headers={"X-Forwarded-For": client_ip()}) as old:
            token = await form_token(old, "/login")
            refused = await old.post("/login", data={"_csrf_token": token, "email": user.email, "password": PASSWORD})
            assert refused.status_code == 401


async def test_download_all_my_data_holds_each_conversations_json_export(app_server: AppServer) -> None:
    async with person(app_server) as (client, user):
        now = datetime.now(UTC)
        ids = [
            await make_saved(
                user, "Kyoto temples", now - timedelta(days=2), [("user", "Temples?"), ("agent", "Many.")]
            ),
            await make_saved(user, "Kyoto temples", now - timedelta(days=1), [("user", "Again, temples?")]),
        ]
        response = await client.get("/account/export.zip")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/zip"
        assert "attachment" in response.headers["content-disposition"]
        with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
            documents = [json.loads(archive.read(name)) for name in archive.namelist()]
            assert len(set(archive.namelist())) == 2
        exports = [json.loads((await client.get(f"/history/{i}/export/json")).content) for i in ids]
        assert documents == exports


async def test_deleting_the_account_removes_everything_and_logs_out_everywhere(app_server: AppServer) -> None:
    async with person(app_server) as (client, user):
        conversation = await make_saved(user, "Doomed", datetime.now(UTC), [("user", "bye")])
        await client.get("/")  # an active conversation too
        async with logged_in(app_server, user.email) as other:
            refused = await post_form(client, "/account/delete", {"confirm": "someone@else.example"})
            assert refused.status_code == 422
            assert "to confirm" in refused.text
            assert await get_user(user.id) is not None

            response = await post_form(client, "/account/delete", {"confirm": user.email.upper()})
            assert response.status_code == 200
            assert "Account deleted" in response.text
            assert not await is_logged_in(client)
            assert not await is_logged_in(other)
        async with connection() as conn:
            assert await conn.fetchval("SELECT count(*) FROM user_account WHERE id = $1", user.id) == 0
            assert await conn.fetchval("SELECT count(*) FROM chat_session WHERE owner = $1", user.id) == 0
            assert await conn.fetchval("SELECT count(*) FROM utterance WHERE session = $1", conversation) == 0
        assert await session_rows(user.id) == 0


async def test_deleting_needs_the_password_when_not_the_email(app_server: AppServer) -> None:
    async with person(app_server) as (client, user):
        response = await post_form(client, "/account/delete", {"confirm": PASSWORD})
        assert response.status_code == 200
        assert await get_user(user.id) is None


async def test_account_forms_refuse_json_and_missing_csrf(app_server: AppServer) -> None:
    async with person(app_server) as (client, user):
        no_token = await client.post("/account/delete", data={"confirm": user.email})
        assert no_token.status_code == 403
        as_json = await client.post(
            "/account/name",
            json={"display_name": "X"},
            headers={"x-csrftoken": str(client.cookies.get("csrftoken"))},
        )
        assert as_json.status_code == 415
        assert (await get_user(user.id)).display_name == user.display_name  # type: ignore[union-attr]


async def test_account_changes_are_rate_limited_per_user(app_server: AppServer) -> None:
    async with person(app_server) as (client, user):
        statuses = [
            (await post_form(client, "/account/name", {"display_name": f"Name {n}"})).status_code for n in range(11)
        ]
        assert statuses == [303] * 10 + [429]
        assert (await get_user(user.id)).display_name == "Name 9"  # type: ignore[union-attr]


async def test_a_password_change_ends_other_sessions_streams_and_sessions_from_before_id_prefixes(
    app_server: AppServer,
) -> None:
    async with person(app_server) as (client, user), logged_in(app_server, user.email) as laptop:
        legacy = f"session:{uuid.uuid4().hex}"  # a login from before session ids started with the user id
        async with connection() as conn:
            await conn.execute(
                "INSERT INTO http_session (key, value, expires_at) VALUES ($1, $2, now() + interval '1 day')",
                legacy,
                json.dumps(
                    {"user_id": str(user.id), "email": user.email, "display_name": "x"}, separators=(",", ":")
                ).encode(),
            )
        cid = await open_conversation(client)
        url = f"/conversations/{cid}/stream"
        mine, theirs = await open_stream(client, url), await open_stream(laptop, url)
        try:
            response = await post_form(
                client, "/account/password", {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
            )
            assert response.status_code == 303
            await asyncio.wait_for(theirs.task, 5)  # ended by the server
            assert not mine.task.done()  # this browser's own stream goes on
        finally:
            await mine.close()
            await theirs.close()
        async with connection() as conn:
            assert await conn.fetchval("SELECT count(*) FROM http_session WHERE key = $1", legacy) == 0
