"""`/readyz`: may this process take traffic? The database answers, every migration file is applied, and live
events flow. `/healthz` (liveness, app.py) keeps its checks; `/readyz` adds the schema, which is what a
deploy that forgot `chatapp migrate` gets wrong: every page would fail on a missing table or column.
"""

from __future__ import annotations

import functools

from litestar import get
from litestar.datastructures import State
from litestar.response import Response

from chatapp.core.database import connection
from chatapp.core.migrations import applied_migrations


@functools.cache
def expected_migrations() -> frozenset[str]:
    """The ids of the migration files shipped with this code (read once: they do not change while running)."""
    from piccolo.apps.migrations.commands.base import BaseMigrationManager

    from chatapp.core.piccolo_app import MIGRATIONS_DIR

    return frozenset(BaseMigrationManager().get_migration_modules(str(MIGRATIONS_DIR)))


@get("/readyz", include_in_schema=False)
async def readyz(state: State) -> Response[dict[str, object]]:
    try:
        async with connection() as conn:
            applied = await applied_migrations(conn)
    except Exception:  # any failure to read is "not ready"; the type alone is not worth a log line per probe
        return Response({"status": "database unavailable"}, status_code=503)
    missing = sorted(expected_migrations() - applied)
    if missing:
        return Response(
            {"status": "migrations pending", "pending": missing, "hint": "run `chatapp migrate`"}, status_code=503
        )
    if not state.conversations.hub.live:
        return Response({"status": "live events unavailable"}, status_code=503)
    return Response({"status": "ok"})
