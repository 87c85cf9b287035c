"""Expand/contract, checked: the code from just before the latest schema change (a `git worktree` of the parent
of the last commit that touched piccolo_migrations/) serves a person from start to finish (sign up, chat with
the agent, New Chat, history) on the database this commit migrated, on an app host of its own beside the
current ones, as during a rolling deploy where the new release migrated first (deploy/README.md)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support import htmx, open_conversation, signup, wait_for
from tests.support_hosts import ROOT, Deployment, figure, spawn, stop_process, wait_until

pytestmark = pytest.mark.slow


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True).stdout.strip()


def previous_version() -> tuple[str, str]:
    """(the last commit that changed the schema, the commit before it: the code that ran on the old schema)."""
    changed = git("log", "-1", "--format=%H", "--", "piccolo_migrations")
    return changed, git("rev-parse", f"{changed}^")


async def test_the_release_before_the_last_schema_change_serves_on_the_migrated_database(
    deployment: Deployment,
) -> None:
    if not (ROOT / ".git").exists():
        pytest.fail("the previous release is taken from git history: run the suite from a git clone")
    changed, previous = previous_version()
    checkout = Path(tempfile.mkdtemp(prefix="chatapp-previous-"))
    shutil.rmtree(checkout)
    git("worktree", "add", "--detach", str(checkout), previous)
    process = None
    try:
        network = deployment.network
        address = network.add_host("old", 14)
        url = f"http://{address}:8000"
        env = deployment.apps["app1"].service.environment() | {
            "PYTHONPATH": str(checkout / "src"),  # the previous release's code, with this checkout's packages
            "CHATAPP_ENV": "development",  # plain http on the private network: cookies without Secure
            "CHATAPP_PUBLIC_URL": url,
            "CHATAPP_DATA_DIR": str(deployment.folder / "old" / "data"),
        }
        (deployment.folder / "old").mkdir(exist_ok=True)
        log = deployment.folder / "old" / "chatapp.log"
        python = str(ROOT / ".venv" / "bin" / "python")
        imported = subprocess.run(
            [python, "-c", "import chatapp; print(chatapp.__file__)"], env=env, capture_output=True, text=True
        )
        assert imported.stdout.startswith(str(checkout)), imported  # the previous release's code runs, not this one
        started = time.monotonic()
        argv = [*network.in_host("old"), python, "-m", "chatapp", "serve"]
        process = spawn(argv, log, env, cwd=checkout)

        def ready() -> bool:
            assert process is not None
            if process.poll() is not None:
                raise RuntimeError(f"the previous release exited:\n{log.read_text()[-3000:]}")
            try:
                return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        await_ready = wait_until(ready, 90, "the previous release", log)
        async with httpx.AsyncClient(base_url=url, timeout=15) as browser:
            await signup(browser)
            cid = await open_conversation(browser)
            sent = await browser.post(
                f"/conversations/{cid}/messages",
                data={"text": "Plan a weekend in Lisbon", "item_id": uuid.uuid4().hex},
                headers=htmx(browser),
            )
            assert sent.status_code in {200, 204}, sent.text

            async def answered() -> bool:
                rows = await deployment.fetch(
                    "SELECT role FROM utterance WHERE session = $1 ORDER BY seq DESC LIMIT 1", cid
                )
                return bool(rows) and rows[0]["role"] == "agent"

            await wait_for(answered, 20)
            saved = await browser.post("/conversations/new", data={"conversation_id": str(cid)}, headers=htmx(browser))
            assert saved.status_code == 200, saved.text
            history = await browser.get("/history")
            assert history.status_code == 200
            assert str(cid) in history.text
        took = time.monotonic() - started
        assert "Traceback" not in log.read_text()
    finally:
        if process is not None:
            stop_process(process, signal.SIGTERM, 15)
        git("worktree", "remove", "--force", str(checkout))
    rows = await deployment.fetch("SELECT title, ended_at IS NOT NULL AS ended FROM chat_session WHERE id = $1", cid)
    assert [(row["title"], row["ended"]) for row in rows] == [("Plan a weekend in Lisbon", True)]
    figure(
        f"previous release ({previous[:8]}, before the schema change of {changed[:8]}) on the migrated database: "
        f"up in {await_ready:.1f} s, sign-up, an answered message, New Chat and history in {took:.1f} s"
    )
