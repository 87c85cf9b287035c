"""Rate limits shared by every app process (counters in PostgreSQL) and a bound on concurrent password hashing.

One limiter for everything: `limit("messages")` is a Litestar guard that counts the request against the
signed-in user's (or, on the public login and sign-up forms, the client address's) quota before the handler
parses the body. Over the quota it answers 429 with `Retry-After` and a message saying how long to wait
(JSON for /api, a toast for htmx, a page otherwise: see web.http_error).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie
from litestar.exceptions import ServiceUnavailableException, TooManyRequestsException
from litestar.handlers.base import BaseRouteHandler

from chatapp.accounts.session_store import PostgresStore
from chatapp.core.settings import Rate, Settings

log = logging.getLogger(__name__)

STORE = "rate_limit"

LimitName = Literal["login", "signup", "messages", "dictation", "new_chat", "import", "account"]


@dataclass(frozen=True)
class Quota:
    setting: str
    per: Literal["address", "user"]
    message: str


QUOTAS: dict[LimitName, Quota] = {
    "login": Quota("auth_rate_limit", "address", "Too many attempts."),
    "signup": Quota("signup_rate_limit", "address", "Too many sign-ups from your network."),
    "messages": Quota("message_rate_limit", "user", "You are sending messages too quickly."),
    "dictation": Quota("dictation_rate_limit", "user", "Too much dictation at once."),
    "new_chat": Quota("new_chat_rate_limit", "user", "Too many new chats."),
    "import": Quota("import_rate_limit", "user", "Too many imports."),
    "account": Quota("account_rate_limit", "user", "Too many account changes."),
}


def wait_text(seconds: float) -> str:
    whole = max(1, math.ceil(seconds))
    if whole < 120:
        return f"{whole} second{'s' if whole != 1 else ''}"
    return f"{math.ceil(whole / 60)} minutes"


class RateLimited(TooManyRequestsException):
    """429 with `Retry-After` (whole seconds) and a message that says how long to wait."""

    def __init__(self, message: str, retry_after: float) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(detail=f"{message} Try again in {wait_text(seconds)}.", headers={"Retry-After": str(seconds)})


class Overloaded(ServiceUnavailableException):
    """503 with `Retry-After`: too many password checks are already waiting."""

    def __init__(self) -> None:
        super().__init__(detail="The server is busy. Try again in a few seconds.", headers={"Retry-After": "2"})


def _store(connection: ASGIConnection[Any, Any, Any, Any]) -> PostgresStore:
    store = connection.app.stores.get(STORE)
    assert isinstance(store, PostgresStore)
    return store


async def check(store: PostgresStore, key: str, rate: Rate, message: str) -> None:
    """Count one event for `key`; raise RateLimited when it is over `rate`."""
    hits, remaining = await store.hit(key, rate.window)
    if hits > rate.limit:
        raise RateLimited(message, remaining)


def limit(name: LimitName) -> Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]:
    """A guard counting each request against quota `name`, keyed by the user or the client address."""
    quota = QUOTAS[name]

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        settings: Settings = connection.app.state.settings
        if quota.per == "user":
            who = f"user:{connection.user.id}"
        else:
            # The real client address: uvicorn's proxy-headers support rewrites it from trusted proxies only.
            who = f"addr:{connection.client.host if connection.client else 'unknown'}"
        await check(_store(connection), f"{name}:{who}", getattr(settings, quota.setting), quota.message)

    guard.__name__ = f"limit_{name}"
    return guard


# Device cookies (OWASP's "Slow brute force with device cookies"): a browser that logged in to an account gets
# a cookie naming it as that account's device. Failed logins are counted per such device, and per account
# only for browsers without one: guesses from anywhere can hold off new browsers, never the owner's own.
DEVICE_COOKIE = "chatapp_device"
DEVICE_MAX_AGE = 365 * 24 * 3600
LOCKED_ACCOUNT = "Too many failed logins for this account. Browsers that logged in to it before are not affected."
LOCKED_DEVICE = "Too many failed logins from this browser."


def _digest(value: str) -> str:
    """Counters are keyed by digests, so the table holds no typed (possibly mistyped) emails."""
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def _account(email: str) -> str:
    return _digest(email.strip().lower())


def _device_mac(secret_key: str, email: str, nonce: str) -> str:
    message = f"device:{_account(email)}:{nonce}".encode()
    return hmac.new(secret_key.encode(), message, hashlib.sha256).hexdigest()[:32]


def device_cookie(settings: Settings, email: str) -> Cookie:
    """A new device cookie for this account (issued at each login; sent back to the login form only)."""
    nonce = secrets.token_urlsafe(16)
    return Cookie(
        key=DEVICE_COOKIE,
        value=f"{nonce}.{_device_mac(settings.secret_key, email, nonce)}",
        path="/login",
        max_age=DEVICE_MAX_AGE,
        httponly=True,
        samesite="lax",
        secure=settings.secure_cookies,
    )


def _known_device(connection: ASGIConnection[Any, Any, Any, Any], email: str) -> str | None:
    """The nonce of this browser's device cookie when it was issued for this account, else None."""
    nonce, _, mac = connection.cookies.get(DEVICE_COOKIE, "").partition(".")
    secret_key: str = connection.app.state.settings.secret_key
    if nonce and hmac.compare_digest(mac, _device_mac(secret_key, email, nonce)):
        return nonce
    return None


async def count_login_attempt(connection: ASGIConnection[Any, Any, Any, Any], email: str) -> str:
    """Count an attempt on this account and refuse it once locked; returns the counter, for a success to clear.

    A browser with the account's device cookie counts against itself; any other counts against the account
    (from every address), so guesses can lock out new browsers but not the owner's. Counted before the
    password is checked, atomically, so a burst of concurrent guesses cannot slip past the lock. Any email can
    be locked, existing or not, so a lock says nothing about whether an account exists.
    """
    rate: Rate = connection.app.state.settings.login_failure_limit
    device = _known_device(connection, email)
    key = f"login-failures:device:{_digest(device)}" if device else f"login-failures:{_account(email)}"
    hits, remaining = await _store(connection).hit(key, rate.window)
    if hits > rate.limit:
        if hits == rate.limit + 1:
            log.warning("logins locked for %s after %d failures", "a device" if device else "an account", rate.limit)
        raise RateLimited(LOCKED_DEVICE if device else LOCKED_ACCOUNT, remaining)
    return key


async def clear_login_failures(connection: ASGIConnection[Any, Any, Any, Any], key: str) -> None:
    await _store(connection).delete(key)


T = TypeVar("T")


class HashGate:
    """At most `concurrency` argon2 computations at once in this process; others wait up to `wait` seconds.

    Each hash costs ~0.25 s of CPU and 64 MiB: without a bound, a flood of login posts fills the thread
    pool and the memory, and every other request (live streams included) waits behind it.
    """

    def __init__(self, concurrency: int, wait: float) -> None:
        self.configure(concurrency, wait)

    def configure(self, concurrency: int, wait: float) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self._wait = wait
        self._refused = 0
        self._warned_at = -math.inf

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in a worker thread once a slot is free; Overloaded when none frees up in time."""
        if self._slots.locked():
            try:
                await asyncio.wait_for(self._slots.acquire(), timeout=self._wait)
            except TimeoutError:
                self._note_refusal()
                raise Overloaded() from None
        else:
            await self._slots.acquire()
        try:
            return await asyncio.to_thread(fn, *args)
        finally:
            self._slots.release()

    def _note_refusal(self) -> None:
        """One warning per 10 s at most: a flood must not turn into a flood of log lines."""
        self._refused += 1
        now = time.monotonic()
        if now - self._warned_at >= 10:
            log.warning("password hashing is saturated: refused %d request(s)", self._refused)
            self._refused, self._warned_at = 0, now
