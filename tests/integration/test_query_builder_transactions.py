"""Piccolo's query builder and raw SQL share one transaction where atomicity matters (database.transaction)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import pytest

from chatapp.accounts.service import get_user
from chatapp.core import database
from chatapp.core.database import connection, get_engine, transaction
from chatapp.core.tables import UserAccount
from tests.factories import make_user


class Boom(RuntimeError):
    pass


async def session_rows(key: str) -> int:
    async with connection() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM http_session WHERE key = $1", key))


async def test_builder_and_raw_statements_roll_back_together(db: str) -> None:
    user = await make_user("Before")
    key = f"test-{uuid.uuid4()}"
    seen_inside: list[str] = []

    async def write_both_then_fail() -> None:
        async with transaction(), connection() as conn:
            await UserAccount.update({UserAccount.display_name: "After"}).where(UserAccount.id == user.id)
            await conn.execute("INSERT INTO http_session (key, value) VALUES ($1, 'x'::bytea)", key)
            seen_inside.append(await conn.fetchval("SELECT display_name FROM user_account WHERE id = $1", user.id))
            raise Boom

    with pytest.raises(Boom):
        await write_both_then_fail()
    # Inside the transaction the builder's write was visible on the raw connection (the same one)...
    assert seen_inside == ["After"]
    # ...and after the rollback neither is anywhere.
    stored = await get_user(user.id)
    assert stored is not None
    assert stored.display_name == "Before"
    assert await session_rows(key) == 0


async def test_builder_and_raw_statements_commit_together(db: str) -> None:
    user = await make_user("Before")
    key = f"test-{uuid.uuid4()}"
    async with transaction(), connection() as conn:
        await UserAccount.update({UserAccount.display_name: "After"}).where(UserAccount.id == user.id)
        await conn.execute("INSERT INTO http_session (key, value) VALUES ($1, 'x'::bytea)", key)
    stored = await get_user(user.id)
    assert stored is not None
    assert stored.display_name == "After"
    assert await session_rows(key) == 1


async def test_builder_queries_wait_for_a_pooled_connection_no_longer_than_raw_ones(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every pooled connection busy, a query-builder statement (and a transaction) gives up after the
    acquire timeout, as raw statements do, instead of waiting for as long as the pool stays busy."""
    monkeypatch.setattr(database, "_acquire_timeout", 0.2)
    async with contextlib.AsyncExitStack() as busy:
        for _ in range(get_engine().pool._maxsize):
            await busy.enter_async_context(connection())
        for attempt in (UserAccount.select(UserAccount.id).first(), _in_transaction()):
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(attempt, timeout=3)
            assert time.monotonic() - started < 1.5


async def _in_transaction() -> None:
    async with transaction():
        await UserAccount.select(UserAccount.id).first()
