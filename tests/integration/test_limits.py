"""Rate limits and caps against two real `chatapp serve` processes sharing one PostgreSQL database.

The servers run with small limits (set through the environment) so each test needs only a few requests.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from chatapp.accounts.service import SIGNUP_REFUSED
from chatapp.core.database import connection
from tests.support import PASSWORD, AppServer, client_ip, form_token, htmx, open_conversation, signup, unique_email

LIMITS = {
    "CHATAPP_AUTH_RATE_LIMIT": "4",
    "CHATAPP_SIGNUP_RATE_LIMIT": "2/hour",
    "CHATAPP_LOGIN_FAILURE_LIMIT": "3/15min",
    "CHATAPP_MESSAGE_RATE_LIMIT": "3/minute",
    "CHATAPP_DICTATION_RATE_LIMIT": "40/minute",
    "CHATAPP_NEW_CHAT_RATE_LIMIT": "2/minute",
    "CHATAPP_MAX_STREAMS_PER_USER": "5",
}
STREAM_CAP = 5
WAIT_MESSAGE = re.compile(r"Try again in (\d+) (seconds?|minutes)\.")


@pytest.fixture(scope="module")
def servers(db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AppServer, AppServer]]:
    """Two app processes on one database, as behind a load balancer."""
    first = AppServer.start(db, Path(tmp_path_factory.mktemp("limits-a")), **LIMITS)
    try:
        second = AppServer.start(db, Path(tmp_path_factory.mktemp("limits-b")), **LIMITS)
    except BaseException:
        first.stop()
        raise
    yield first, second
    second.stop()
    first.stop()


def browser(server: AppServer, ip: str | None = None) -> httpx.AsyncClient:
    """A client with its own cookie jar, from `ip` (a fresh address unless given)."""
    return httpx.AsyncClient(base_url=server.url, headers={"X-Forwarded-For": ip or client_ip()}, timeout=15.0)


@pytest_asyncio.fixture(loop_scope="session")
async def a(servers: tuple[AppServer, AppServer]) -> AsyncIterator[httpx.AsyncClient]:
    async with browser(servers[0]) as http:
        yield http


async def login(client: httpx.AsyncClient, email: str, password: str, url: str = "") -> httpx.Response:
    token = await form_token(client)
    return await client.post(f"{url}/login", data={"_csrf_token": token, "email": email, "password": password})


async def post_signup(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    token = await form_token(client, "/signup")
    return await client.post(
        "/signup", data={"_csrf_token": token, "email": email, "display_name": "Quota", "password": password}
    )


def assert_wait(response: httpx.Response, message: str, text: str | None = None) -> int:
    """A 429 with a whole-seconds Retry-After, and the message saying how long to wait."""
    assert response.status_code == 429, response.text
    retry_after = int(response.headers["retry-after"])
    assert retry_after >= 1
    shown = response.text if text is None else text
    assert message in shown
    match = WAIT_MESSAGE.search(shown)
    assert match, shown
    seconds = int(match.group(1)) * (60 if match.group(2) == "minutes" else 1)
    assert abs(seconds - retry_after) < 60
    return retry_after


def toast(response: httpx.Response) -> str:
    trigger = json.loads(response.headers["hx-trigger"])
    assert trigger["toast"]["level"] == "error"
    return str(trigger["toast"]["message"])


async def users_named(email: str) -> int:
    async with connection() as conn:
        count: int = await conn.fetchval("SELECT count(*) FROM user_account WHERE email = $1", email)
    return count


async def test_signups_have_their_own_quota_and_do_not_lock_out_logins(a: httpx.AsyncClient) -> None:
    ip = str(a.headers["x-forwarded-for"])
    first = await signup(a)
    async with browser_like(a, ip) as other:
        await signup(other)
    async with browser_like(a, ip) as third:
        refused_email = unique_email()
        refused = await post_signup(third, refused_email)
        retry_after = assert_wait(refused, "Too many sign-ups from your network.")
        assert 3500 <= retry_after <= 3600
        assert await users_named(refused_email) == 0
        # The same address can still log in.
        assert (await login(third, first, PASSWORD)).status_code == 303


async def test_failed_logins_do_not_use_up_the_signup_quota(a: httpx.AsyncClient) -> None:
    statuses = [(await login(a, unique_email(), "wrong password!")).status_code for _ in range(5)]
    assert statuses == [401, 401, 401, 401, 429]
    assert (await post_signup(a, unique_email())).status_code == 303


def browser_like(client: httpx.AsyncClient, ip: str) -> httpx.AsyncClient:
    """Another browser (empty cookie jar) at the same address as `client`."""
    return httpx.AsyncClient(base_url=client.base_url, headers={"X-Forwarded-For": ip}, timeout=15.0)


async def test_failed_logins_lock_the_account_from_every_address_and_process(
    servers: tuple[AppServer, AppServer], a: httpx.AsyncClient
) -> None:
    victim = await signup(a)
    async with browser_like(a, client_ip()) as fresh:
        bystander = await signup(fresh)
    for n in range(3):
        async with browser(servers[n % 2]) as attacker:  # each guess from a new address, on either process
            assert (await login(attacker, victim, f"guess number {n}")).status_code == 401
    async with browser(servers[1]) as owner:
        locked = await login(owner, victim, PASSWORD)  # even the right password waits out the lock
        retry_after = assert_wait(locked, "Too many failed logins for this account.")
        assert 840 <= retry_after <= 900
        assert "Try again in 15 minutes." in locked.text
        assert owner.cookies.get("chatapp_session") is None
    async with browser(servers[0]) as other:
        assert (await login(other, bystander, PASSWORD)).status_code == 303
    # An email without an account locks the same way: a lock tells nothing about which emails exist.
    ghost = unique_email()
    for _ in range(3):
        async with browser(servers[0]) as attacker:
            assert (await login(attacker, ghost, "any password at all")).status_code == 401
    async with browser(servers[1]) as attacker:
        assert_wait(await login(attacker, ghost.upper(), "any password at all"), "Too many failed logins")


async def test_guesses_from_many_addresses_cannot_lock_out_a_browser_that_logged_in_before(
    servers: tuple[AppServer, AppServer], a: httpx.AsyncClient
) -> None:
    victim = await signup(a)  # the owner's browser; signing up is its first login
    await a.post("/logout", headers=htmx(a))
    for n in range(6):  # twice the limit, each guess from a new address, on either process
        async with browser(servers[n % 2]) as attacker:
            assert (await login(attacker, victim, f"guess number {n}")).status_code in (401, 429)
    async with browser(servers[1]) as new_device:  # a browser the owner never used: the account's limit applies
        assert_wait(await login(new_device, victim, PASSWORD), "Too many failed logins for this account.")
    # The owner's own browser logs in at once, on either process.
    assert (await login(a, victim, PASSWORD, url=servers[1].url)).status_code == 303
    assert (await a.get("/")).status_code == 200


async def test_a_known_browser_guessing_wrong_is_limited_on_its_own(
    servers: tuple[AppServer, AppServer], a: httpx.AsyncClient
) -> None:
    owner = await signup(a)
    await a.post("/logout", headers=htmx(a))
    async with browser(servers[1]) as other_address:
        other_address.cookies.update(a.cookies)  # the same browser, moved to another network each time
        for n in range(3):
            other_address.headers["X-Forwarded-For"] = client_ip()
            assert (await login(other_address, owner, f"wrong {n}")).status_code == 401
        other_address.headers["X-Forwarded-For"] = client_ip()
        assert_wait(await login(other_address, owner, PASSWORD), "Too many failed logins from this browser.")
    async with browser(servers[0]) as new_device:  # its guesses did not count against the account
        assert (await login(new_device, owner, PASSWORD)).status_code == 303


async def test_a_burst_of_concurrent_guesses_gets_no_more_than_the_limit(
    servers: tuple[AppServer, AppServer],
) -> None:
    victim = unique_email()
    attackers = [browser(servers[n % 2]) for n in range(8)]
    tokens = [await form_token(c) for c in attackers]
    responses = await asyncio.gather(
        *(
            c.post("/login", data={"_csrf_token": t, "email": victim, "password": f"guess {n}"})
            for n, (c, t) in enumerate(zip(attackers, tokens, strict=True))
        )
    )
    for c in attackers:
        await c.aclose()
    assert sorted(r.status_code for r in responses) == [401] * 3 + [429] * 5


async def test_htmx_gets_a_toast_and_a_page_gets_the_wait_in_words(a: httpx.AsyncClient) -> None:
    token = await form_token(a)
    for _ in range(4):
        await a.post("/login", data={"_csrf_token": token, "email": unique_email(), "password": "x" * 12})
    data = {"_csrf_token": token, "email": unique_email(), "password": "x" * 12}
    page = await a.post("/login", data=data)
    assert_wait(page, "Too many attempts.")
    assert "Please wait" in page.text
    fragment = await a.post("/login", data=data, headers={"HX-Request": "true"})
    assert_wait(fragment, "Too many attempts.", toast(fragment))
    assert fragment.headers["hx-reswap"] == "none"


async def test_signup_with_a_taken_email_does_not_say_it_is_taken(a: httpx.AsyncClient) -> None:
    email = await signup(a)
    async with connection() as conn:
        stored = await conn.fetchval("SELECT password_hash FROM user_account WHERE email = $1", email)
    async with browser_like(a, client_ip()) as other:
        started = time.perf_counter()
        response = await post_signup(other, email.upper(), "another long password")
        elapsed = time.perf_counter() - started
    assert response.status_code == 422
    assert "already" not in response.text
    assert "exists" not in response.text
    assert "taken" not in response.text
    assert SIGNUP_REFUSED.split(";")[0] in response.text.replace("&#39;", "'")
    # The password was hashed before the insert failed (argon2 costs ~0.25 s; a lookup alone takes ~5 ms),
    # so the refusal is no quicker than a success.
    assert elapsed >= 0.1
    async with connection() as conn:
        assert await conn.fetchval("SELECT password_hash FROM user_account WHERE email = $1", email) == stored


async def test_concurrent_attempts_on_two_processes_share_one_exact_quota(
    servers: tuple[AppServer, AppServer],
) -> None:
    ip = client_ip()
    async with browser(servers[0], ip) as http:
        token = await form_token(http)

        async def attempt(n: int) -> int:
            data = {"_csrf_token": token, "email": unique_email(), "password": "x" * 12}
            response = await http.post(f"{servers[n % 2].url}/login", data=data)
            return response.status_code

        statuses = await asyncio.gather(*(attempt(n) for n in range(12)))
    assert sorted(statuses) == [401] * 4 + [429] * 8


async def open_streams(client: httpx.AsyncClient, urls: list[str]) -> list[httpx.Response]:
    """Open these live streams at once; each response stays open (a 200) or is a refusal."""
    requests = [client.build_request("GET", url, headers={"Accept": "text/event-stream"}) for url in urls]
    return list(await asyncio.gather(*(client.send(r, stream=True) for r in requests)))


async def close_all(responses: list[httpx.Response]) -> None:
    for response in responses:
        await response.aclose()


async def test_the_stream_cap_holds_per_user_across_processes_opening_at_once(
    servers: tuple[AppServer, AppServer], a: httpx.AsyncClient
) -> None:
    await signup(a)
    cid = await open_conversation(a)
    urls = [f"{servers[n % 2].url}/conversations/{cid}/stream" for n in range(4 * STREAM_CAP)]
    responses = await open_streams(a, urls)
    try:
        assert sorted(r.status_code for r in responses) == [200] * STREAM_CAP + [429] * (3 * STREAM_CAP)
    finally:
        await close_all(responses)

    # Closed streams give their places back, on either process.
    async def all_admitted() -> bool:
        again = await open_streams(a, urls[:STREAM_CAP])
        await close_all(again)
        return all(r.status_code == 200 for r in again)

    for _ in range(50):
        if await all_admitted():
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("closed streams never gave their places back")


SLOT = "INSERT INTO stream_slot (id, owner, holder, expires_at) VALUES ($1, $2, $3, now() + make_interval(secs => $4))"


async def test_the_slots_of_a_process_that_died_expire(
    servers: tuple[AppServer, AppServer], a: httpx.AsyncClient
) -> None:
    email = await signup(a)
    cid = await open_conversation(a)
    async with connection() as conn:
        owner = await conn.fetchval("SELECT id FROM user_account WHERE email = $1", email)
        # A killed process's streams: it stopped renewing them, so their leases ran out.
        for _ in range(STREAM_CAP):
            await conn.execute(SLOT, uuid.uuid4(), owner, "dead", -1.0)
        await conn.execute(SLOT, uuid.uuid4(), owner, "alive", 30.0)  # and one stream of a live process
    responses = await open_streams(a, [f"{servers[1].url}/conversations/{cid}/stream"] * STREAM_CAP)
    try:
        assert sorted(r.status_code for r in responses) == [200] * (STREAM_CAP - 1) + [429]
    finally:
        await close_all(responses)


async def test_typed_messages_are_limited_per_user_across_processes(
    servers: tuple[AppServer, AppServer], a: httpx.AsyncClient
) -> None:
    await signup(a)
    cid = await open_conversation(a)
    url = f"/conversations/{cid}/messages"
    for n in range(3):
        response = await a.post(url, data={"text": f"message {n}", "item_id": str(uuid.uuid4())}, headers=htmx(a))
        assert response.status_code == 204
    # The same user through the other process (same session cookie) is over the quota too.
    refused = await a.post(
        f"{servers[1].url}{url}", data={"text": "one too many", "item_id": str(uuid.uuid4())}, headers=htmx(a)
    )
    assert_wait(refused, "You are sending messages too quickly.", toast(refused))
    async with connection() as conn:
        texts = await conn.fetch("SELECT text FROM utterance WHERE session = $1 AND role = 'user'", cid)
    assert sorted(r["text"] for r in texts) == ["message 0", "message 1", "message 2"]
    # Another user is not affected.
    async with browser(servers[0]) as other:
        await signup(other)
        other_cid = await open_conversation(other)
        response = await other.post(f"/conversations/{other_cid}/messages", data={"text": "hi"}, headers=htmx(other))
        assert response.status_code == 204


async def test_new_chat_is_limited_per_user_and_a_refused_one_changes_nothing(a: httpx.AsyncClient) -> None:
    await signup(a)
    for _ in range(2):
        response = await a.post("/conversations/new", data={}, headers=htmx(a))
        assert response.status_code == 200
    current = await open_conversation(a)
    refused = await a.post("/conversations/new", data={"conversation_id": str(current)}, headers=htmx(a))
    assert_wait(refused, "Too many new chats.", toast(refused))
    async with connection() as conn:
        assert await conn.fetchval("SELECT ended_at FROM chat_session WHERE id = $1", current) is None
    assert await open_conversation(a) == current


async def test_pending_interims_are_capped_and_dictation_is_limited(a: httpx.AsyncClient) -> None:
    await signup(a)
    cid = await open_conversation(a)
    url = f"/conversations/{cid}/dictation"
    for n in range(40):
        response = await a.post(url, json={"item_id": f"flood-{n}", "text": f"interim {n}"}, headers=htmx(a))
        assert response.status_code == 204
    refused = await a.post(url, json={"item_id": "flood-40", "text": "interim 40"}, headers=htmx(a))
    assert_wait(refused, "Too much dictation at once.", toast(refused))
    # New Chat saves what is pending as interrupted finals: only the newest ones (32 at most, the agent's
    # greeting may have held a place for a while) were kept.
    saved = await a.post("/conversations/new", data={"conversation_id": str(cid)}, headers=htmx(a))
    assert saved.status_code == 200
    async with connection() as conn:
        rows = await conn.fetch("SELECT item_id FROM utterance WHERE session = $1 AND role = 'user'", cid)
    kept = {r["item_id"] for r in rows}
    assert 30 <= len(kept) <= 32
    assert {f"dictation-flood-{n}" for n in range(10, 40)} <= kept
    assert not kept & {f"dictation-flood-{n}" for n in range(8)}


async def test_a_flood_of_logins_waits_for_bounded_hashing_then_gets_503(
    db: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    server = AppServer.start(
        db, Path(tmp_path_factory.mktemp("hash-gate")), CHATAPP_HASH_CONCURRENCY="1", CHATAPP_HASH_WAIT_SECONDS="0"
    )
    try:
        clients = [browser(server) for _ in range(6)]
        tokens = [await form_token(c) for c in clients]
        responses = await asyncio.gather(
            *(
                c.post("/login", data={"_csrf_token": t, "email": unique_email(), "password": "x" * 12})
                for c, t in zip(clients, tokens, strict=True)
            )
        )
        statuses = sorted(r.status_code for r in responses)
        assert 401 in statuses
        assert 503 in statuses
        assert set(statuses) == {401, 503}
        busy = next(r for r in responses if r.status_code == 503)
        assert busy.headers["retry-after"] == "2"
        assert "The server is busy" in busy.text
        for c in clients:
            await c.aclose()
    finally:
        server.stop()


async def test_stop_counts_against_the_message_quota(a: httpx.AsyncClient) -> None:
    """The Stop button shares the typed-message quota: a script hammering it is refused, politely."""
    await signup(a)
    cid = await open_conversation(a)
    for _ in range(3):
        assert (await a.post(f"/conversations/{cid}/stop", headers=htmx(a))).status_code == 204
    refused = await a.post(f"/conversations/{cid}/stop", headers=htmx(a))
    assert_wait(refused, "You are sending messages too quickly.", toast(refused))
