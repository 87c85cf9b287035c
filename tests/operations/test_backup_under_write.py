"""A backup taken while people's conversations are being written (deploy's chatapp-backup.service on an app
host), restored into a fresh PostgreSQL server on another host (deploy/postgresql/setup.sql, then
chatapp-restore), with the app started on it (chatapp.service on a third app host): every conversation saved
before the backup started is there, and found by the app's search."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import pytest

from chatapp.conversations.agent_access import ingest_token
from tests.support import htmx, open_conversation, signup, wait_for
from tests.support_hosts import (
    DEPLOY,
    ETC,
    INSTALL_PREFIX,
    ROOT,
    AppHost,
    DatabaseHost,
    Deployment,
    env_line,
    figure,
    installed_service,
)

pytestmark = pytest.mark.slow

WRITERS = 3


@dataclass
class Writer:
    """A person saving one short conversation after another, each with a word of its own to search for."""

    saved: list[tuple[uuid.UUID, str, float]] = field(default_factory=list)  # (conversation, word, acknowledged at)
    cookie: str = ""

    async def run(self, deployment: Deployment, address: str, stop: asyncio.Event) -> None:
        async with deployment.client(address) as browser:
            await signup(browser)
            self.cookie = "; ".join(f"{c.name}={c.value}" for c in browser.cookies.jar)
            while not stop.is_set():
                cid = await open_conversation(browser)
                word = f"fjord{uuid.uuid4().hex[:10]}"
                events = [{"item_id": "u1", "role": "user", "text": f"Kayaking the {word} at dawn", "final": True}]
                token = ingest_token(deployment.secret_key, cid)
                posted = await browser.post(
                    f"/api/conversations/{cid}/events",
                    json={"events": events},
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert posted.status_code == 200, posted.text
                saved = await browser.post(
                    "/conversations/new", data={"conversation_id": str(cid)}, headers=htmx(browser)
                )
                assert saved.status_code == 200, saved.text
                self.saved.append((cid, word, time.monotonic()))


async def test_a_backup_taken_under_writes_restores_on_a_fresh_server_with_everything_saved_before_it_searchable(
    deployment: Deployment,
) -> None:
    writers, stop = [Writer() for _ in range(WRITERS)], asyncio.Event()
    tasks = [asyncio.create_task(writer.run(deployment, f"127.0.0.{31 + n}", stop)) for n, writer in enumerate(writers)]
    try:

        async def everyone_saved() -> bool:
            return all(writer.saved for writer in writers)

        await wait_for(everyone_saved, 30)
        backup_started = time.monotonic()
        backup = (await asyncio.to_thread(deployment.service("app1", "chatapp-backup.service").run_once)).strip()
        took_backup = time.monotonic() - backup_started
        await asyncio.sleep(0.5)  # still writing after it
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    before = [(cid, word) for writer in writers for cid, word, at in writer.saved if at < backup_started]
    assert len(before) >= WRITERS

    # A fresh server on a host of its own, set up as deploy/README.md says, and the backup restored into it.
    network = deployment.network
    fresh = DatabaseHost(network, deployment.folder / "db-restored", network.add_host("db2", 31), host="db2")
    fresh.init()
    fresh.start()
    app: AppHost | None = None
    try:
        password = urlsplit(deployment.database_url).password or ""
        fresh.psql("-v", f"password={password}", "-f", str(DEPLOY / "postgresql" / "setup.sql"))
        etc = deployment.folder / "restored-etc"
        etc.mkdir()
        values = dict(deployment.settings)
        values["DATABASE_URL"] = values["DATABASE_URL"].replace(
            f"@{deployment.database.address}:", f"@{fresh.address}:"
        )
        env_file = etc / "chatapp.env"  # the deployment's, DATABASE_URL naming the fresh server
        env_file.write_text("".join(env_line(key, value) + "\n" for key, value in values.items()))
        started = time.monotonic()
        restored = await asyncio.to_thread(
            lambda: network_run(
                network.in_host("app1"), [str(DEPLOY / "bin" / "chatapp-restore"), backup, str(env_file)]
            )
        )
        took_restore = time.monotonic() - started
        assert "restored" in restored

        # The app on the restored server: chatapp.service on a new app host, its env file naming that server.
        paths = {INSTALL_PREFIX: str(ROOT), ETC: str(etc)}
        service = installed_service(network, "app3", "chatapp.service", paths, deployment.folder)
        app = AppHost("app3", network.add_host("app3", 13), service)
        started = time.monotonic()
        await asyncio.to_thread(service.start)
        await asyncio.to_thread(app.wait_ready)
        took_start = time.monotonic() - started

        found = 0
        async with httpx.AsyncClient(base_url=app.url, timeout=15) as direct:
            for writer in writers:
                for cid, word, at in writer.saved:
                    if at >= backup_started:
                        continue
                    page = await direct.get("/history", params={"q": word}, headers={"Cookie": writer.cookie})
                    assert page.status_code == 200
                    assert str(cid) in page.text, f"{cid} ({word}) saved before the backup is not found"
                    found += 1
        after = sum(1 for writer in writers for _, _, at in writer.saved if at >= backup_started)
    finally:
        if app is not None:
            app.service.stop()
        fresh.stop()
    assert found == len(before)
    figure(
        f"backup under writes ({WRITERS} people saving conversations): pg_dump {took_backup:.2f} s; restored on a "
        f"fresh server in {took_restore:.2f} s, the app up on it in {took_start:.1f} s; {found}/{len(before)} "
        f"conversations saved before the backup found by the app's search ({after} saved during or after it)"
    )


def network_run(prefix: list[str], argv: list[str]) -> str:
    result = subprocess.run(
        [*prefix, *argv], capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"}
    )
    assert result.returncode == 0, result.stderr
    return result.stdout
