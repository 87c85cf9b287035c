"""The key-value store of login sessions (and rate-limit counters): a Litestar `Store` in PostgreSQL's
`http_session` table, so both are shared by every app process.

Deletes go through Piccolo's query builder. Writes and reads stay raw SQL: they compute expiry with the
database's clock (now() + make_interval), renew in the same statement, and count hits with one atomic upsert,
none of which the query builder can say.
"""

from __future__ import annotations

import re
from datetime import timedelta

from litestar.stores.base import NamespacedStore
from piccolo.columns.combination import WhereRaw

from chatapp.core.database import connection
from chatapp.core.tables import HttpSession


def _seconds(value: int | timedelta | None) -> float | None:
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


# Counters keep their count as decimal text in `value`, so they live in the same table (and expire with the
# same cleanup) as sessions. An expired row starts a new window. The commit does not wait for the WAL flush
# (synchronous_commit off for this statement only): a crash may forget the last few counts, which is harmless,
# and a hit costs ~0.5-1.5 ms instead of ~8.5 ms (measured on the embedded server, loaded 2-core machine).
_HIT = """
INSERT INTO http_session AS s (key, value, expires_at)
SELECT $1, '1'::bytea, now() + make_interval(secs => $2)
FROM (SELECT set_config('synchronous_commit', 'off', true)) AS counters_need_no_fsync
ON CONFLICT (key) DO UPDATE SET
    value = CASE WHEN s.expires_at <= now() THEN '1'::bytea
                 ELSE convert_to((convert_from(s.value, 'UTF8')::int + 1)::text, 'UTF8') END,
    expires_at = CASE WHEN s.expires_at <= now() THEN excluded.expires_at ELSE s.expires_at END
RETURNING convert_from(value, 'UTF8')::int AS hits, extract(epoch FROM expires_at - now()) AS remaining
"""


class PostgresStore(NamespacedStore):
    """Key/value rows in `http_session`; keys are prefixed by the namespace, expired rows never returned."""

    def __init__(self, namespace: str = "default") -> None:
        super().__init__()
        self.namespace = namespace

    def with_namespace(self, namespace: str) -> PostgresStore:
        return PostgresStore(f"{self.namespace}:{namespace}")

    def _key(self, key: str) -> str:
        return f"{self.namespace}:{key}"

    async def set(self, key: str, value: str | bytes, expires_in: int | timedelta | None = None) -> None:
        data = value.encode() if isinstance(value, str) else value
        async with connection() as conn:
            await conn.execute(
                """
                INSERT INTO http_session (key, value, expires_at)
                VALUES ($1, $2, now() + make_interval(secs => $3))
                ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
                """,
                self._key(key),
                data,
                _seconds(expires_in),
            )

    async def get(self, key: str, renew_for: int | timedelta | None = None) -> bytes | None:
        async with connection() as conn:
            if renew_for is not None:
                value: bytes | None = await conn.fetchval(
                    """
                    UPDATE http_session SET expires_at = now() + make_interval(secs => $2)
                    WHERE key = $1 AND expires_at > now()
                    RETURNING value
                    """,
                    self._key(key),
                    _seconds(renew_for),
                )
                if value is not None:
                    return value
            return await conn.fetchval(  # type: ignore[no-any-return]
                """
                SELECT value FROM http_session
                WHERE key = $1 AND (expires_at IS NULL OR expires_at > now())
                """,
                self._key(key),
            )

    async def delete(self, key: str) -> None:
        await HttpSession.delete().where(HttpSession.key == self._key(key))

    async def delete_all(self) -> None:
        prefix = re.sub(r"([\\%_])", r"\\\1", f"{self.namespace}:")  # LIKE's wildcards, taken literally
        await HttpSession.delete().where(HttpSession.key.like(prefix + "%"))

    async def delete_expired(self) -> int:
        # The database's clock decides, as it does for every expiry in this store.
        expired = await HttpSession.delete().where(WhereRaw("expires_at <= now()")).returning(HttpSession.key)
        return len(expired)

    async def exists(self, key: str) -> bool:
        return await self.get(key) is not None

    async def hit(self, key: str, window: int) -> tuple[int, float]:
        """Count one event in `key`'s fixed window (started by its first event, `window` seconds long).

        One atomic upsert, so every process counts into the same row without lost updates (Litestar's
        rate-limit middleware reads, then writes, under a lock that only holds within one process).
        Returns the count including this event, and the seconds until the window ends.
        """
        async with connection() as conn:
            row = await conn.fetchrow(_HIT, self._key(key), float(window))
        assert row is not None
        return int(row["hits"]), max(0.0, float(row["remaining"]))

    async def expires_in(self, key: str) -> int | None:
        async with connection() as conn:
            seconds = await conn.fetchval(
                "SELECT extract(epoch FROM expires_at - now()) FROM http_session WHERE key = $1",
                self._key(key),
            )
        return None if seconds is None else max(0, int(seconds))
