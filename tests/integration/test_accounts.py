"""Sign-up, login, logout, sessions, CSRF and rate limits against the real server and database."""

from __future__ import annotations

import httpx
import pytest

from chatapp.core.database import connection
from tests.support import PASSWORD, client_ip, csrf_from, form_token, signup, unique_email


async def test_signup_logs_in_and_shows_display_name(client: httpx.AsyncClient) -> None:
    email = await signup(client, display_name="Grace <b>Hopper</b>")
    page = await client.get("/")
    assert page.status_code == 200
    assert "Grace &lt;b&gt;Hopper&lt;/b&gt;" in page.text
    async with connection() as conn:
        row = await conn.fetchrow("SELECT email, password_hash FROM user_account WHERE email = $1", email)
    assert row is not None
    assert row["password_hash"].startswith("$argon2id$")
    assert PASSWORD not in row["password_hash"]


async def test_email_is_case_insensitive_and_unique(client: httpx.AsyncClient) -> None:
    email = unique_email()
    await signup(client, email=email)
    other = httpx.AsyncClient(base_url=client.base_url, headers={"X-Forwarded-For": client_ip()})
    async with other:
        token = await form_token(other, "/signup")
        response = await other.post(
            "/signup",
            data={"_csrf_token": token, "email": email.upper(), "display_name": "Copy", "password": PASSWORD},
        )
    assert response.status_code == 422
    assert "could not create an account" in response.text
    async with connection() as conn:
        count = await conn.fetchval("SELECT count(*) FROM user_account WHERE email = $1", email)
    assert count == 1


@pytest.mark.parametrize(
    ("email", "display_name", "password", "message"),
    [
        ("not-an-email", "Ann", PASSWORD, "Enter a valid email address"),
        (None, "Ann", "short", "at least 10 characters"),
        (None, "   ", PASSWORD, "Enter the name"),
        (None, "x" * 81, PASSWORD, "at most 80 characters"),
    ],
)
async def test_bad_signup_input_gets_a_form_error_and_creates_nothing(
    client: httpx.AsyncClient, email: str | None, display_name: str, password: str, message: str
) -> None:
    email = email or unique_email()
    token = await form_token(client, "/signup")
    response = await client.post(
        "/signup",
        data={"_csrf_token": token, "email": email, "display_name": display_name, "password": password},
    )
    assert response.status_code == 422
    assert message in response.text
    assert 'aria-invalid="true"' in response.text
    async with connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM user_account WHERE email = $1", email.lower()) == 0


async def test_pages_redirect_to_login_and_come_back(client: httpx.AsyncClient) -> None:
    response = await client.get("/?x=1")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2F%3Fx%3D1"
    email = unique_email()
    await signup(client, email=email)
    await client.post("/logout", data={"_csrf_token": csrf_from((await client.get("/")).text)})
    token = await form_token(client, "/login?next=/%3Fx%3D1")
    response = await client.post(
        "/login", data={"_csrf_token": token, "email": email, "password": PASSWORD, "next": "/?x=1"}
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/?x=1"


async def test_login_refuses_open_redirects(client: httpx.AsyncClient) -> None:
    email = await signup(client)
    await client.post("/logout", data={"_csrf_token": csrf_from((await client.get("/")).text)})
    token = await form_token(client)
    response = await client.post(
        "/login",
        data={"_csrf_token": token, "email": email, "password": PASSWORD, "next": "//evil.example/x"},
    )
    assert response.headers["location"] == "/"


async def test_wrong_password_is_a_form_error(client: httpx.AsyncClient) -> None:
    email = await signup(client)
    fresh = httpx.AsyncClient(base_url=client.base_url, headers={"X-Forwarded-For": client_ip()})
    async with fresh:
        token = await form_token(fresh)
        response = await fresh.post("/login", data={"_csrf_token": token, "email": email, "password": "wrong" * 3})
        assert response.status_code == 401
        assert "do not match" in response.text
        assert (await fresh.get("/")).status_code == 303


async def test_login_rotates_the_session_id(client: httpx.AsyncClient) -> None:
    email = await signup(client)
    fixated = client.cookies.get("chatapp_session")
    assert fixated
    await client.post("/logout", data={"_csrf_token": csrf_from((await client.get("/")).text)})
    # An attacker plants a known session id before the victim logs in.
    client.cookies.delete("chatapp_session")
    client.cookies.set("chatapp_session", fixated)
    token = await form_token(client)
    response = await client.post("/login", data={"_csrf_token": token, "email": email, "password": PASSWORD})
    assert response.status_code == 303
    rotated = response.cookies.get("chatapp_session")
    assert rotated
    assert rotated != fixated
    attacker = httpx.AsyncClient(base_url=client.base_url, cookies={"chatapp_session": fixated})
    async with attacker:
        assert (await attacker.get("/")).status_code == 303


async def test_session_cookie_flags(client: httpx.AsyncClient) -> None:
    token = await form_token(client, "/signup")
    response = await client.post(
        "/signup",
        data={"_csrf_token": token, "email": unique_email(), "display_name": "Flags", "password": PASSWORD},
    )
    cookie = next(v for k, v in response.headers.multi_items() if k == "set-cookie" and "chatapp_session" in v)
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie or "SameSite=Lax" in cookie
    assert "Max-Age=" in cookie or "Expires=" in cookie


async def test_logout_revokes_the_session_on_the_server(client: httpx.AsyncClient) -> None:
    await signup(client)
    session_id = client.cookies.get("chatapp_session")
    async with connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM http_session WHERE key = $1", f"session:{session_id}") == 1
    response = await client.post("/logout", data={"_csrf_token": csrf_from((await client.get("/")).text)})
    assert response.status_code == 303
    async with connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM http_session WHERE key = $1", f"session:{session_id}") == 0
    # Replaying the old cookie no longer works.
    replay = httpx.AsyncClient(base_url=client.base_url, cookies={"chatapp_session": str(session_id)})
    async with replay:
        assert (await replay.get("/")).status_code == 303


async def test_posts_without_csrf_token_are_rejected(client: httpx.AsyncClient) -> None:
    email = unique_email()
    await client.get("/signup")
    response = await client.post("/signup", data={"email": email, "display_name": "No Token", "password": PASSWORD})
    assert response.status_code == 403
    assert "CSRF" in response.text
    await signup(client)
    htmx = await client.post("/logout", headers={"HX-Request": "true", "x-csrftoken": "forged"})
    assert htmx.status_code == 403
    assert (await client.get("/")).status_code == 200  # the forged logout changed nothing
    async with connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM user_account WHERE email = $1", email) == 0


async def test_a_csrf_token_issued_to_one_login_session_is_refused_with_another(client: httpx.AsyncClient) -> None:
    """A token pair planted in a victim's browser (cookie and header both the attacker's) no longer works: the
    token is valid only for the login session it was issued to."""
    await signup(client)  # the attacker's own login: a valid token pair for session A
    planted = str(client.cookies.get("csrftoken"))
    async with httpx.AsyncClient(base_url=client.base_url, headers={"X-Forwarded-For": client_ip()}) as victim:
        await signup(victim)
        assert (await victim.get("/")).status_code == 200
        [own_cookie] = [c for c in victim.cookies.jar if c.name == "csrftoken"]
        victim.cookies.set("csrftoken", planted, domain=own_cookie.domain)  # replaces the victim's own
        forged = await victim.post("/logout", headers={"HX-Request": "true", "x-csrftoken": planted})
        assert forged.status_code == 403
        assert (await victim.get("/")).status_code == 200  # still logged in: the forged logout changed nothing
        # The victim's next page re-issues a token of its own session, which works.
        own = str(victim.cookies.get("csrftoken"))
        assert own != planted
        response = await victim.post("/logout", headers={"HX-Request": "true", "x-csrftoken": own})
        assert response.status_code == 303
    # The token still works for the session it was issued to.
    assert (await client.post("/logout", headers={"HX-Request": "true", "x-csrftoken": planted})).status_code == 303


async def test_after_login_and_logout_the_forms_carry_a_token_that_works(client: httpx.AsyncClient) -> None:
    email = await signup(client)
    logged_in = str(client.cookies.get("csrftoken"))
    assert (await client.post("/logout", headers={"HX-Request": "true", "x-csrftoken": logged_in})).status_code == 303
    token = await form_token(client)  # the login form after logging out
    response = await client.post("/login", data={"_csrf_token": token, "email": email, "password": PASSWORD})
    assert response.status_code == 303
    page = await client.get("/")
    assert page.status_code == 200
    token = csrf_from(page.text)
    assert token == client.cookies.get("csrftoken")
    assert (await client.post("/logout", headers={"HX-Request": "true", "x-csrftoken": token})).status_code == 303


async def test_htmx_posts_with_the_header_token_pass(client: httpx.AsyncClient) -> None:
    await signup(client)
    page = await client.get("/")
    token = csrf_from(page.text)
    response = await client.post("/logout", headers={"HX-Request": "true", "x-csrftoken": token})
    assert response.status_code == 303


async def test_login_is_rate_limited_per_client_address(client: httpx.AsyncClient) -> None:
    token = await form_token(client)
    statuses = []
    for _ in range(7):
        response = await client.post(
            "/login", data={"_csrf_token": token, "email": "nobody@example.com", "password": "x" * 12}
        )
        statuses.append(response.status_code)
    assert statuses[:5] == [401] * 5
    assert statuses[5:] == [429, 429]
    # Another client address (behind the trusted proxy) is not affected.
    response = await client.post(
        "/login",
        data={"_csrf_token": token, "email": "nobody@example.com", "password": "x" * 12},
        headers={"X-Forwarded-For": client_ip()},
    )
    assert response.status_code == 401


async def test_visitors_without_a_session_get_no_session_row_or_cookie(client: httpx.AsyncClient) -> None:
    async with connection() as conn:
        before = await conn.fetchval("SELECT count(*) FROM http_session WHERE key LIKE 'session:%'")
    for path in ("/login", "/signup", "/healthz", "/static/app.css"):
        response = await client.get(path)
        assert response.status_code == 200
        assert "chatapp_session" not in response.headers.get("set-cookie", "")
    async with connection() as conn:
        after = await conn.fetchval("SELECT count(*) FROM http_session WHERE key LIKE 'session:%'")
    assert after == before


async def test_page_views_do_not_rewrite_the_session(client: httpx.AsyncClient) -> None:
    await signup(client)
    key = f"session:{client.cookies.get('chatapp_session')}"
    async with connection() as conn:
        before = await conn.fetchval("SELECT xmin::text FROM http_session WHERE key = $1", key)
    for _ in range(3):
        response = await client.get("/")
        assert response.status_code == 200
        assert "chatapp_session" not in response.headers.get("set-cookie", "")
    async with connection() as conn:
        after = await conn.fetchval("SELECT xmin::text FROM http_session WHERE key = $1", key)
    assert after == before  # no write, no commit per page view
