"""Apply Piccolo migrations from piccolo_migrations/ to the configured database."""

from __future__ import annotations

import contextlib
import io

from chatapp.database import DatabaseUnavailable


async def apply_migrations() -> list[str]:
    """Run every pending migration; return the ids applied (empty when up to date)."""
    from piccolo.apps.migrations.commands.forwards import run_forwards

    from chatapp.database import connection

    async with connection() as conn:
        before = await _applied(conn)
    with contextlib.redirect_stdout(io.StringIO()) as output:  # Piccolo prints progress bars.
        result = await run_forwards(app_name="chatapp")
    if not result.success:
        raise DatabaseUnavailable(f"migrations failed: {result.message or output.getvalue().strip()[-300:]}")
    async with connection() as conn:
        after = await _applied(conn)
    return sorted(after - before)


async def _applied(conn: object) -> set[str]:
    exists = await conn.fetchval("SELECT to_regclass('migration') IS NOT NULL")  # type: ignore[attr-defined]
    if not exists:
        return set()
    rows = await conn.fetch("SELECT name FROM migration WHERE app_name = 'chatapp'")  # type: ignore[attr-defined]
    return {row["name"] for row in rows}
