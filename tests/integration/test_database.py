"""The schema: migrations apply to an empty database, and the constraints later features rely on."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import pytest

from chatapp.core.database import EmbeddedPostgres, connection
from chatapp.core.migrations import apply_migrations
from tests.support import ROOT


async def test_migrations_are_recorded_and_idempotent(db: str) -> None:
    assert await apply_migrations() == []
    async with connection() as conn:
        tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
    assert {"user_account", "chat_session", "utterance", "http_session", "migration"} <= tables


async def test_one_active_conversation_per_user_is_enforced(db: str) -> None:
    async with connection() as conn:
        user_id = await conn.fetchval(
            "INSERT INTO user_account (email, display_name, password_hash) VALUES ($1, 'A', 'x') RETURNING id",
            f"{uuid.uuid4().hex}@example.com",
        )
        await conn.execute("INSERT INTO chat_session (room_name, owner) VALUES ($1, $2)", uuid.uuid4().hex, user_id)
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute("INSERT INTO chat_session (room_name, owner) VALUES ($1, $2)", uuid.uuid4().hex, user_id)


async def test_utterance_item_ids_are_unique_per_conversation(db: str) -> None:
    async with connection() as conn:
        user_id = await conn.fetchval(
            "INSERT INTO user_account (email, display_name, password_hash) VALUES ($1, 'A', 'x') RETURNING id",
            f"{uuid.uuid4().hex}@example.com",
        )
        session_id = await conn.fetchval(
            "INSERT INTO chat_session (room_name, owner) VALUES ($1, $2) RETURNING id",
            uuid.uuid4().hex,
            user_id,
        )
        insert = "INSERT INTO utterance (session, seq, item_id, role, text) VALUES ($1, $2, $3, 'user', 'hi')"
        await conn.execute(insert, session_id, 1, "item-1")
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(insert, session_id, 2, "item-1")
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO utterance (session, seq, item_id, role, text) VALUES ($1, 3, 'x', 'robot', 'hi')",
                session_id,
            )


def test_migrations_apply_to_an_empty_database(tmp_path: Path) -> None:
    """A brand-new cluster, migrated by the CLI exactly as `make run` does it."""
    import os
    import subprocess
    import sys

    embedded = EmbeddedPostgres(tmp_path, delete_on_stop=True)
    dsn = embedded.start()
    try:
        env = {
            **os.environ,
            "DATABASE_URL": dsn,
            "CHATAPP_DATA_DIR": str(tmp_path),
            "CHATAPP_ENV_FILE": "/none",
        }
        first = subprocess.run([sys.executable, "-m", "chatapp", "migrate"], env=env, capture_output=True, text=True)
        assert first.returncode == 0, first.stderr
        migrations = len(list((ROOT / "piccolo_migrations").glob("chatapp_*.py")))
        assert f"applied {migrations} migration(s)" in first.stdout
        second = subprocess.run([sys.executable, "-m", "chatapp", "migrate"], env=env, capture_output=True, text=True)
        assert second.returncode == 0, second.stderr
        assert "up to date" in second.stdout
    finally:
        embedded.stop()
