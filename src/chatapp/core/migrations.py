"""Apply Piccolo migrations from piccolo_migrations/ to the configured database."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Awaitable, Callable
from typing import Any

from chatapp.core.database import DatabaseUnavailable

# Held (a session-level advisory lock on a connection of its own) while migrations run: app hosts that each
# migrate before they start (deploy/systemd/chatapp.service) take turns instead of racing to create the same
# tables; the second finds the schema up to date.
MIGRATION_LOCK_SQL = "SELECT pg_advisory_lock(hashtextextended('chatapp:migrate', 0))"
MIGRATION_UNLOCK_SQL = "SELECT pg_advisory_unlock(hashtextextended('chatapp:migrate', 0))"


async def apply_migrations() -> list[str]:
    """Run every pending migration, one migrating process at a time; return the ids applied (empty when up to
    date, also when another process applied them while this one waited for the lock)."""
    from piccolo.apps.migrations.commands.forwards import run_forwards

    from chatapp.core.database import connection

    async with connection() as lock:
        await lock.execute(MIGRATION_LOCK_SQL)
        try:
            async with connection() as conn:
                before = await applied_migrations(conn)
            with contextlib.redirect_stdout(io.StringIO()) as output:  # Piccolo prints progress bars.
                result = await run_forwards(app_name="chatapp")
            if not result.success:
                raise DatabaseUnavailable(f"migrations failed: {result.message or output.getvalue().strip()[-300:]}")
            async with connection() as conn:
                after = await applied_migrations(conn)
        finally:
            await lock.execute(MIGRATION_UNLOCK_SQL)
    return sorted(after - before)


async def applied_migrations(conn: object) -> set[str]:
    """The ids Piccolo recorded as applied for chatapp (none on a database never migrated)."""
    exists = await conn.fetchval("SELECT to_regclass('migration') IS NOT NULL")  # type: ignore[attr-defined]
    if not exists:
        return set()
    rows = await conn.fetch("SELECT name FROM migration WHERE app_name = 'chatapp'")  # type: ignore[attr-defined]
    return {row["name"] for row in rows}


def sql_migration(migration_id: str, description: str, statements: list[str]) -> Callable[[], Awaitable[Any]]:
    """A Piccolo migration that runs SQL statements in order, inside Piccolo's migration transaction.

    Our migrations are SQL because they use what Piccolo's auto-migrations cannot express (partial, descending
    and GIN indexes, generated columns); this keeps each migration file down to its statements.
    """
    from piccolo.apps.migrations.auto.migration_manager import MigrationManager
    from piccolo.table import Table

    class _Raw(Table):  # Piccolo runs raw SQL through a table class
        pass

    async def forwards() -> MigrationManager:
        manager = MigrationManager(migration_id=migration_id, app_name="chatapp", description=description)

        async def run() -> None:
            for statement in statements:
                await _Raw.raw(statement)

        manager.add_raw(run)
        return manager

    return forwards
