"""An open chat page whose server is killed (kill -9) mid-stream and started again recovers on its own."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, expect

from chatapp.core.database import connection
from tests.e2e.pages import ChatPage
from tests.support import READY, AppServer
from tests.support_forwarder import Feeder, forwarder_for, forwarding

FINALS = 60


@pytest.mark.slow
async def test_a_killed_and_restarted_server_shows_reconnecting_then_every_final_once_without_a_reload(
    context: BrowserContext, db: str, tmp_path: Path, screenshots: Path
) -> None:
    server = AppServer.start(db, tmp_path / "app", ready_timeout=READY)
    try:
        chat = ChatPage(await context.new_page(), server.url)
        await chat.signup()
        await chat.wait_for_agent_reply(1)
        cid = uuid.UUID(await chat.conversation_id())
        await chat.page.evaluate("window.__beforeCrash = 'still the same document'")
        badge = chat.page.locator("#connection-state")
        await expect(badge).to_be_hidden()

        feeder = Feeder(forwarder_for(server.url, cid))
        async with forwarding(feeder.forwarder) as forwarder:
            crash_now = asyncio.Event()
            feeding = asyncio.create_task(feeder.run(FINALS, started=crash_now, at=FINALS // 3))
            await crash_now.wait()
            os.kill(server.process.pid, signal.SIGKILL)
            server.process.wait()
            await expect(badge).to_be_visible()
            await expect(badge).to_have_text("Reconnecting…")
            await chat.page.screenshot(path=screenshots / "crash-reconnecting.png")
            port = int(server.url.rsplit(":", 1)[1])
            server = await asyncio.to_thread(AppServer.start, db, tmp_path / "app", port=port, ready_timeout=READY)
            await feeding
            assert await forwarder.flush(60)
            assert forwarder.dropped == 0

        async with connection() as conn:
            stored = await conn.fetchval("SELECT count(*) FROM utterance WHERE session = $1", cid)
        await expect(badge).to_be_hidden(timeout=30_000)  # EventSource came back by itself
        shown = chat.page.locator("#messages-container .message[data-seq]")
        await expect(shown).to_have_count(stored, timeout=15_000)
        seqs = await shown.evaluate_all("els => els.map(e => Number(e.dataset.seq))")
        assert seqs == list(range(1, stored + 1))  # every final once, in order
        texts = await shown.evaluate_all("els => els.map(e => e.textContent)")
        for text in feeder.texts.values():
            assert sum(text in shown_text for shown_text in texts) == 1, text
        assert await chat.page.evaluate("window.__beforeCrash") == "still the same document"  # no reload
        navigations = await chat.page.evaluate("performance.getEntriesByType('navigation').length")
        assert navigations == 1
    finally:
        server.stop()
