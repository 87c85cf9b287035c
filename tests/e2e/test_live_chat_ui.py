"""A person types, sees their message and the agent's streamed reply, reloads, and opens a second tab."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import httpx
from playwright.async_api import BrowserContext, expect

from chatapp.conversations.agent_access import ingest_token
from chatapp.core.database import connection
from tests.e2e.pages import ChatPage
from tests.support import SECRET_KEY, AppServer


async def test_type_see_streamed_reply_reload_and_second_tab(
    context: BrowserContext, app_server: AppServer, screenshots: Path
) -> None:
    chat = ChatPage(await context.new_page(), app_server.url)
    await chat.signup()
    await expect(chat.page.get_by_test_id("offline-notice")).to_be_visible()
    await expect(chat.page.locator("#conversation-title")).to_have_text("New Conversation")
    # The agent greets first; the hint gives way to the greeting (it would only say the same).
    await chat.wait_for_agent_reply(1)
    await expect(chat.page.locator("#empty-state")).to_be_hidden()

    # The reply streams: interims (data-final=false) appear before the final replaces them in place.
    await chat.page.evaluate(
        """() => { window.__sawInterim = false;
          new MutationObserver(() => {
            if (document.querySelector('#messages-container .message[data-final="false"]')) window.__sawInterim = true;
          }).observe(document.getElementById('messages-container'), {childList: true, subtree: true}); }"""
    )
    await chat.send("I want to plan a trip to Lisbon <b>soon</b>")
    await expect(chat.finals("user")).to_have_count(1)
    await expect(chat.finals("user").first).to_contain_text("I want to plan a trip to Lisbon <b>soon</b>")
    await expect(chat.page.locator("#empty-state")).to_be_hidden()
    await chat.wait_for_agent_reply(2)
    await expect(chat.finals("agent").nth(1)).to_contain_text("Lisbon")
    assert await chat.page.evaluate("window.__sawInterim") is True
    await expect(chat.page.locator('#messages-container .message[data-final="false"]')).to_have_count(0)
    await chat.page.screenshot(path=screenshots / "live-chat.png")

    # A second tab shows the same conversation, and follows it live.
    other = ChatPage(await context.new_page(), app_server.url)
    await other.page.goto(f"{app_server.url}/")
    assert await other.conversation_id() == await chat.conversation_id()
    await expect(other.finals("user")).to_have_count(1)
    await chat.send("What about a weekend in Porto?")
    await expect(other.finals("user")).to_have_count(2)
    await other.wait_for_agent_reply(3)

    # Reload: the transcript is still there, in order, nothing twice.
    await chat.page.reload()
    await expect(chat.finals("user")).to_have_count(2)
    await chat.wait_for_agent_reply(3)
    roles = await chat.messages.evaluate_all("els => els.map(e => e.dataset.role)")
    assert roles == ["agent", "user", "agent", "user", "agent"]

    async with connection() as conn:
        stored = await conn.fetch(
            "SELECT role, text FROM utterance WHERE session = $1 ORDER BY seq",
            uuid.UUID(await chat.conversation_id()),
        )
    assert [r["role"] for r in stored] == roles
    assert stored[1]["text"] == "I want to plan a trip to Lisbon <b>soon</b>"


async def test_a_dropped_stream_reconnects_and_catches_up_exactly_once(
    context: BrowserContext, app_server: AppServer
) -> None:
    chat = ChatPage(await context.new_page(), app_server.url)
    await chat.signup()
    await chat.wait_for_agent_reply(1)
    await chat.send("Hello there")
    await chat.wait_for_agent_reply(2)
    cid = uuid.UUID(await chat.conversation_id())
    async with httpx.AsyncClient(base_url=app_server.url) as http:
        # The server ends every stream (as a proxy timeout would); finals arrive while the page is away.
        assert (await http.post("/_test/drop-streams")).status_code == 204
        await expect(chat.page.locator("#connection-state")).to_be_visible()
        response = await http.post(
            f"/api/conversations/{cid}/events",
            json={
                "events": [
                    {"item_id": f"w-{n}", "role": "user", "text": f"while away {n}", "final": True} for n in range(3)
                ]
            },
            headers={"Authorization": f"Bearer {ingest_token(SECRET_KEY, cid)}"},
        )
        assert response.status_code == 200
    await expect(chat.page.locator("#connection-state")).to_be_hidden()
    await expect(chat.finals("user")).to_have_count(4)
    await expect(chat.finals("user").last).to_have_text(re.compile("while away 2"))
    ids = await chat.messages.evaluate_all("els => els.map(e => e.id)")
    assert len(ids) == len(set(ids))
