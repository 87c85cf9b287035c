"""Which statements a piece of the app sends to PostgreSQL: a log fed by asyncpg's query logger on the pooled
connections of the modules named (their `connection`), and on connections opened with `asyncpg.connect` (the hub's
own) when asked. Round-trip tests count in it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from types import ModuleType

import asyncpg
import pytest


class StatementLog:
    """Every statement sent, whitespace collapsed (but the LISTEN connection's periodic liveness check). asyncpg
    reports a statement on the loop's next turn: take() once what was sent has had its effect."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def record(self, query: asyncpg.connection.LoggedQuery) -> None:
        if query.query != "SELECT 1":
            self.statements.append(" ".join(query.query.split()))

    def take(self) -> list[str]:
        taken, self.statements = self.statements, []
        return taken

    def count(self, sql: str) -> int:
        """How many times `sql` was sent."""
        return self.statements.count(" ".join(sql.split()))


def log_statements(
    monkeypatch: pytest.MonkeyPatch, *modules: ModuleType, own_connections: bool = False
) -> StatementLog:
    """A StatementLog of what the `modules` send on their pooled connections, and with `own_connections` on every
    connection opened with asyncpg.connect, for the rest of the test."""
    log = StatementLog()
    for module in modules:
        monkeypatch.setattr(module, "connection", _logged(module.connection, log))
    if own_connections:
        real_connect = asyncpg.connect

        async def logged_connect(*args: object, **kwargs: object) -> asyncpg.Connection:
            conn = await real_connect(*args, **kwargs)
            conn.add_query_logger(log.record)
            return conn

        monkeypatch.setattr(asyncpg, "connect", logged_connect)
    return log


def _logged(
    real_connection: Callable[[], contextlib.AbstractAsyncContextManager[asyncpg.Connection]], log: StatementLog
) -> Callable[[], contextlib.AbstractAsyncContextManager[asyncpg.Connection]]:
    @contextlib.asynccontextmanager
    async def logged_connection() -> AsyncIterator[asyncpg.Connection]:
        async with real_connection() as conn:
            conn.add_query_logger(log.record)
            try:
                yield conn
            finally:
                conn.remove_query_logger(log.record)

    return logged_connection
