"""deploy/'s backup (chatapp-backup.service, run as systemd would on an app host) and restore commands against
the database host: what was stored comes back in a fresh database, searchable; a database in use is refused."""

from __future__ import annotations

import subprocess
import time
import uuid

import asyncpg
import pytest

from chatapp.conversations.agent_access import ingest_token
from tests.support import htmx, open_conversation, signup, wait_for
from tests.support_hosts import DEPLOY, Deployment, env_line, figure, read_env_file

RESTORED = "chatapp_restored"


def restore_env(deployment: Deployment) -> str:
    """The env file an operator restoring into another database would use: DATABASE_URL changed, all else kept."""
    values = read_env_file(deployment.env_file)
    values["DATABASE_URL"] = values["DATABASE_URL"].rsplit("/", 1)[0] + f"/{RESTORED}"
    path = deployment.folder / "etc" / "restore.env"
    path.write_text("".join(env_line(key, value) + "\n" for key, value in values.items()))
    return str(path)


def restore(deployment: Deployment, backup: str, env_file: str) -> subprocess.CompletedProcess[str]:
    command = [*deployment.network.in_host("app1"), str(DEPLOY / "bin" / "chatapp-restore"), backup, env_file]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})


async def snapshot(dsn: str) -> tuple[list[tuple[object, ...]], list[uuid.UUID]]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        conversations = await conn.fetch(
            "SELECT s.id, s.title, s.ended_at, count(u.id) FROM chat_session s"
            " LEFT JOIN utterance u ON u.session = s.id GROUP BY s.id ORDER BY s.id"
        )
        found = await conn.fetch(
            "SELECT id FROM chat_session WHERE search_doc @@ websearch_to_tsquery('english', 'glaciers') ORDER BY id"
        )
    finally:
        await conn.close()
    return [tuple(row) for row in conversations], [row["id"] for row in found]


@pytest.fixture
async def saved_conversation(deployment: Deployment) -> uuid.UUID:
    async with deployment.client("127.0.0.9") as browser:
        await signup(browser)
        cid = await open_conversation(browser)
        events = [{"item_id": "u1", "role": "user", "text": "Walking on glaciers in Iceland", "final": True}]
        token = ingest_token(deployment.secret_key, cid)
        posted = await browser.post(
            f"/api/conversations/{cid}/events", json={"events": events}, headers={"Authorization": f"Bearer {token}"}
        )
        assert posted.status_code == 200
        saved = await browser.post("/conversations/new", data={"conversation_id": str(cid)}, headers=htmx(browser))
        assert saved.status_code == 200
        following = await open_conversation(browser)

    async def greeted() -> bool:  # the next conversation's agent has spoken: nothing more is being written
        rows = await deployment.fetch("SELECT 1 FROM utterance WHERE session = $1 AND role = 'agent'", following)
        return bool(rows)

    await wait_for(greeted, 15)
    return cid


async def test_a_backup_restores_into_a_fresh_database_with_every_conversation_searchable(
    deployment: Deployment, saved_conversation: uuid.UUID
) -> None:
    started = time.monotonic()
    backup = deployment.service("app1", "chatapp-backup.service").run_once().strip()
    took_backup = time.monotonic() - started
    assert backup.startswith(deployment.settings["CHATAPP_BACKUP_DIR"])
    before = await snapshot(deployment.database_url)

    deployment.database.psql("-c", f"CREATE DATABASE {RESTORED} OWNER chatapp")
    env_file = restore_env(deployment)
    started = time.monotonic()
    restored = restore(deployment, backup, env_file)
    took_restore = time.monotonic() - started
    assert restored.returncode == 0, restored.stderr
    after = await snapshot(read_env_file(deployment.folder / "etc" / "restore.env")["DATABASE_URL"])

    assert after == before
    assert saved_conversation in after[1]
    figure(f"backup ({len(before[0])} conversations): pg_dump {took_backup:.2f} s, restore {took_restore:.2f} s")

    again = restore(deployment, backup, env_file)
    assert again.returncode == 1
    assert "restore into a fresh one" in again.stderr
    assert await snapshot(read_env_file(deployment.folder / "etc" / "restore.env")["DATABASE_URL"]) == after


async def test_backups_beyond_the_number_to_keep_are_removed_oldest_first(deployment: Deployment) -> None:
    backups = deployment.folder / "backups"
    backups.mkdir(exist_ok=True)
    keep = int(deployment.settings["CHATAPP_BACKUP_KEEP"])
    old = [backups / f"chatapp-20000101T0000{n:02d}Z.dump" for n in range(keep + 2)]
    for path in old:
        path.write_bytes(b"an old backup")
    before = {path.name for path in backups.glob("chatapp-*.dump")}
    newest = deployment.service("app1", "chatapp-backup.service").run_once().strip().rsplit("/", 1)[-1]
    left = sorted(path.name for path in backups.glob("chatapp-*.dump"))
    assert left == sorted({*before, newest})[-keep:]
    assert left[-1] == newest
    assert old[0].name not in left  # the oldest went first
    assert not list(backups.glob(".*partial"))
