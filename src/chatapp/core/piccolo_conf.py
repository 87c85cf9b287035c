"""Piccolo's engine and app registry; the DSN is filled in by `chatapp.core.database.configure_engine()`."""

import os
from collections.abc import Sequence
from typing import Any

from piccolo.conf.apps import AppRegistry
from piccolo.engine.postgres import PostgresEngine, PostgresTransaction


class _Transaction(PostgresTransaction):
    """Piccolo's transaction, waiting for a pooled connection no longer than chatapp's other statements do."""

    async def get_connection(self) -> Any:
        from chatapp.core import database

        if self.engine.pool:
            return await self.engine.pool.acquire(timeout=database.acquire_timeout())
        return await self.engine.get_new_connection()


class DeferredPostgresEngine(PostgresEngine):
    """Piccolo's engine, minus the version check it runs while being constructed.

    The embedded server's socket path is only known once it runs, so this module holds a placeholder DSN
    and `configure_engine()` points the engine at the real database before first use.
    """

    async def check_version(self) -> None:
        return None

    def transaction(self, allow_nested: bool = True) -> PostgresTransaction:
        return _Transaction(engine=self, allow_nested=allow_nested)

    async def _run_in_pool(self, query: str, args: Sequence[Any] | None = None) -> Any:
        """The query builder's statements outside a transaction take their connection through
        chatapp.core.database.connection(), like the raw ones: the same pool-acquire timeout, and a connection lost
        mid-statement is the same DatabaseUnavailable (503). (Piccolo's own version acquires without a timeout.)"""
        from chatapp.core.database import connection

        async with connection() as conn:
            return await conn.fetch(query, *(args or ()))


DB = DeferredPostgresEngine(config={"dsn": os.environ.get("DATABASE_URL") or "postgresql:///chatapp"})

APP_REGISTRY = AppRegistry(apps=["chatapp.core.piccolo_app"])
