"""What the app sends to PostgreSQL: the login session store's statements, and PostgreSQL's own statement log
of one request (so each bare-SQL baseline is checked against what the app really sends)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import asyncpg

from bench.kit.machine import BenchEnv

T = TypeVar("T")
# The login session store (accounts/session_store.py, PostgresStore): Litestar reads the session row on every
# authenticated request. Sessions have a fixed lifetime and carry the user, so an unchanged session is neither
# renewed nor written back, and the user is not looked up (StatementLog shows what a request really sends).
SESSION_READ = """
    SELECT value FROM http_session
    WHERE key = $1 AND (expires_at IS NULL OR expires_at > now())
"""
SESSION_WRITE = """
    INSERT INTO http_session (key, value, expires_at)
    VALUES ($1, $2, now() + make_interval(secs => $3))
    ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
"""
SESSION_SECONDS = 14 * 24 * 3600
# asyncpg's Connection.transaction() sends these as simple queries: one round trip each.
BEGIN, COMMIT = "BEGIN;", "COMMIT;"
_SQL_COMMENT = re.compile(r"--[^\n]*")
# Search highlights use a random marker per process (chatapp.history.search._NONCE): the same statement in two
# processes differs only there.
_HIGHLIGHT_MARKER = re.compile(r"(hlstart|hlstop)[0-9a-f]+")
_LOG_ENTRY = re.compile(r"^(\d+\.\d+) \[(\d+)\] ([A-Z]+\d?):  (.*)$")
_LOGGED_SQL = re.compile(r"^(?:statement|execute [^:]+): (.*)$", re.DOTALL)
_LOG_PREFIX = "%n [%p] "  # epoch seconds with milliseconds, backend pid


def sql_key(sql: str) -> str:
    """A statement without comments and with whitespace collapsed: the app's SQL and a baseline's compare equal
    when PostgreSQL would run the same thing."""
    return " ".join(_HIGHLIGHT_MARKER.sub(r"\1", _SQL_COMMENT.sub(" ", sql)).split())


async def login_session_row(conn: asyncpg.Connection, key: str, user_id: uuid.UUID, email: str, name: str) -> str:
    """Untimed setup for a baseline: a login session row as the app writes it at login (the store's key prefix,
    the app's own session payload). Returns the store key, for SESSION_READ."""
    from chatapp.accounts.service import User
    from chatapp.accounts.sessions import session_for

    store_key = f"session:{key}"  # PostgresStore("session") prefixes its keys with its namespace
    value = json.dumps(session_for(User(id=user_id, email=email, display_name=name))).encode()
    await conn.execute(SESSION_WRITE, store_key, value, SESSION_SECONDS)
    return store_key


# Statements a probe may catch that are not the request's own: asyncpg's one-time type introspection on a fresh
# pool connection (its jit switch around it) and the app's agent-lease keeper (renewal, the orphan scan) running
# meanwhile, once a second.
BACKGROUND = (
    "SELECT current_setting('jit')",
    "SELECT set_config('jit'",
    "WITH RECURSIVE typeinfo_tree",
    "SELECT l.conversation FROM agent_lease",
)


def not_background(statements: Sequence[str]) -> list[str]:
    """`statements` without those of BACKGROUND."""
    return [st for st in statements if not st.startswith(BACKGROUND)]


class StatementLog:
    """The statements the app sends, as PostgreSQL itself logs them (log_statement = 'all', switched on only
    while `statement_log()` is open): what one request costs in statements and round trips, and a check that a
    baseline runs exactly the app's SQL. Each statement logged is one round trip (asyncpg's statement cache
    means no separate prepare once warm; BEGIN and COMMIT are statements of their own)."""

    def __init__(self, conn: asyncpg.Connection, path: Path, own_pid: int) -> None:
        self.conn = conn
        self.path = path
        self.own_pid = own_pid

    async def capture(self, call: Callable[[], Awaitable[T]], ignore: Collection[str] = ()) -> tuple[T, list[str]]:
        """Run `call` (one request) and return its result and, in order, the statements (as sql_key()s) that
        other connections sent while it ran, leaving out those in `ignore` (work the app does meanwhile on its
        own, such as a new agent's greeting)."""
        offset = self.path.stat().st_size
        started = time.time()
        result = await call()
        finished = time.time()
        # A backend writes its log line before it answers, so the request's statements are in the file now.
        with self.path.open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
        skip = {sql_key(sql) for sql in ignore}
        statements = []
        for at, pid, sql in _logged_statements(text):
            # %n has millisecond resolution (truncated): allow for it at both ends of the request.
            if pid != self.own_pid and started - 0.002 <= at <= finished + 0.002 and sql not in skip:
                statements.append(sql)
        return result, statements


def _logged_statements(text: str) -> Iterator[tuple[float, int, str]]:
    """(time, pid, sql_key) of each statement in a stretch of a server log written with _LOG_PREFIX."""
    entries: list[list[str]] = []
    for line in text.splitlines():
        match = _LOG_ENTRY.match(line)
        if match:
            entries.append(list(match.groups()))
        elif entries:
            entries[-1][3] += "\n" + line  # a statement's further lines
    for at, pid, level, message in entries:
        if level == "LOG" and (sql := _LOGGED_SQL.match(message)):
            yield float(at), int(pid), sql_key(sql.group(1))


@contextlib.asynccontextmanager
async def statement_log(env: BenchEnv) -> AsyncIterator[StatementLog | None]:
    """Statement logging on the bench's embedded server while open (None with BENCH_DATABASE_URL: someone
    else's server's settings are left alone). Only a few probe requests should run meanwhile."""
    if env.server_log is None or not env.server_log.exists():
        yield None
        return
    conn = await asyncpg.connect(env.dsn)
    try:
        await conn.execute("ALTER SYSTEM SET log_statement = 'all'")
        await conn.execute(f"ALTER SYSTEM SET log_line_prefix = '{_LOG_PREFIX}'")
        await conn.execute("SELECT pg_reload_conf()")
        # The postmaster passes the reload on to every backend; each applies it before its next statement.
        deadline = time.perf_counter() + 5
        while await conn.fetchval("SHOW log_statement") != "all":
            if time.perf_counter() > deadline:
                raise RuntimeError("log_statement = 'all' did not take effect")
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        yield StatementLog(conn, env.server_log, int(await conn.fetchval("SELECT pg_backend_pid()")))
    finally:
        with contextlib.suppress(Exception):
            await conn.execute("ALTER SYSTEM RESET log_statement")
            await conn.execute("ALTER SYSTEM RESET log_line_prefix")
            await conn.execute("SELECT pg_reload_conf()")
        await conn.close()


def describe_statements(statements: Sequence[str], names: Mapping[str, str]) -> str:
    """'N round trips (name, name, …)', naming each statement by the bench's name for it (sql_key -> name)."""
    labels = [names.get(s, s if len(s) <= 70 else s[:69] + "…") for s in statements]
    count = f"{len(statements)} round trip{'' if len(statements) == 1 else 's'}"
    return f"{count} ({', '.join(labels)})" if labels else count


def statement_facts(statements: Sequence[str]) -> list[str]:
    """What some logged statements (sql_key()s) show about the per-request overheads the app used to have:
    login session writes, user lookups, asyncpg's reset query on release."""
    session = [s for s in statements if "http_session" in s]
    writes = [s for s in session if not s.startswith("SELECT")]
    facts = []
    if writes:
        facts.append(f"{len(writes)} write(s) of the login session")
    elif session:
        facts.append("the login session is only read (not renewed, not written back)")
    lookups = [s for s in statements if s.startswith("SELECT") and "FROM user_account" in s and "FOR UPDATE" not in s]
    facts.append(f"{len(lookups)} user lookup(s)" if lookups else "no user lookup (the session carries the user)")
    resets = sum("RESET ALL" in s for s in statements)
    facts.append(f"{resets} pool reset(s)" if resets else "no reset query when a connection goes back to the pool")
    return facts


def statement_mismatch(what: str, observed: Sequence[str], expected: Sequence[str], names: Mapping[str, str]) -> str:
    """Why the baseline does not run what the app sent for one request ("" when it runs exactly that)."""
    expected_keys = [sql_key(sql) for sql in expected]
    if list(observed) == expected_keys:
        return ""
    return (
        f"{what}: the app sent {describe_statements(observed, names)}, the baseline runs "
        f"{describe_statements(expected_keys, names)}"
    )
