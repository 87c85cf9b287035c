"""New Chat in the browser: the design document's end-to-end flow and its manual testing checklist."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
from playwright.async_api import BrowserContext, expect

from chatapp.conversations import queries
from chatapp.core.database import connection
from tests.e2e.pages import ChatPage
from tests.support import AppServer


async def test_new_chat_saves_clears_and_starts_a_fresh_agent(
    context: BrowserContext, app_server: AppServer, screenshots: Path
) -> None:
    chat = ChatPage(await context.new_page(), app_server.url)
    await chat.signup()
    await chat.wait_for_agent_reply(1)
    for n, text in enumerate(["Plan a trip to Lisbon", "Three days in May", "We love food"], start=2):
        await chat.send(text)
        await chat.wait_for_agent_reply(n)
    old_id = await chat.conversation_id()

    button = chat.page.locator("#new-chat-button")
    await expect(button).to_be_visible()
    await button.click()

    await expect(chat.panel).not_to_have_attribute("data-conversation-id", old_id)
    await expect(chat.page.locator("#conversation-title")).to_have_text("New Conversation")
    await expect(chat.finals("user")).to_have_count(0)
    await chat.wait_for_agent_reply(1)  # the new agent's greeting, in place of the hint
    await expect(chat.page.locator("#empty-state")).to_be_hidden()
    await expect(chat.page.get_by_test_id("new-chat-status")).to_have_text("Saved · Open")
    await expect(chat.page.get_by_test_id("toast")).to_have_count(0)
    first_item = chat.page.locator("#history-list [data-testid=history-item]").first
    await expect(first_item).to_have_attribute("data-conversation-id", old_id)
    await expect(first_item).to_have_text("Plan a trip to Lisbon")
    await chat.page.screenshot(path=screenshots / "new-chat-after.png")
    new_id = await chat.conversation_id()
    assert new_id != old_id

    # The user can talk again at once, and the new agent answers.
    await expect(chat.page.locator("#message-input")).to_be_focused()
    await chat.send("Now a weekend in Porto")
    await expect(chat.finals("user")).to_have_count(1)
    await expect(chat.finals("agent").last).to_contain_text("Porto", timeout=15_000)

    saved = await queries.get_conversation(uuid.UUID(old_id))
    assert saved is not None
    assert saved.ended_at is not None
    assert saved.title == "Plan a trip to Lisbon"
    async with connection() as conn:
        rows = await conn.fetch("SELECT role, text FROM utterance WHERE session = $1 ORDER BY seq", uuid.UUID(old_id))
    assert [r["text"] for r in rows if r["role"] == "user"] == [
        "Plan a trip to Lisbon",
        "Three days in May",
        "We love food",
    ]
    assert len(rows) == 7  # greeting + three exchanges
    current = await queries.get_conversation(uuid.UUID(new_id))
    assert current is not None
    assert current.active


async def test_new_chat_on_an_empty_conversation_adds_nothing_and_says_so(
    context: BrowserContext, app_server: AppServer
) -> None:
    chat = ChatPage(await context.new_page(), app_server.url)
    await chat.signup()
    await chat.wait_for_agent_reply(1)
    old_id = await chat.conversation_id()
    await chat.page.locator("#new-chat-button").click()
    await expect(chat.panel).not_to_have_attribute("data-conversation-id", old_id)
    await expect(chat.page.locator("#history-list [data-testid=history-item]")).to_have_count(0)
    await expect(chat.page.get_by_test_id("new-chat-status")).to_have_text("Nothing to save · started fresh")
    await expect(chat.page.get_by_test_id("toast")).to_have_count(0)
    assert await queries.get_conversation(uuid.UUID(old_id)) is None


async def test_a_double_click_saves_once(context: BrowserContext, app_server: AppServer) -> None:
    chat = ChatPage(await context.new_page(), app_server.url)
    await chat.signup()
    await chat.send("Double click me")
    await expect(chat.finals("user")).to_have_count(1)
    old_id = await chat.conversation_id()
    await chat.page.locator("#new-chat-button").dblclick()
    await expect(chat.panel).not_to_have_attribute("data-conversation-id", old_id)
    await expect(chat.page.locator("#history-list [data-testid=history-item]")).to_have_count(1)
    async with connection() as conn:
        owner = await conn.fetchval("SELECT owner FROM chat_session WHERE id = $1", uuid.UUID(old_id))
        saved = await conn.fetchval(
            "SELECT count(*) FROM chat_session WHERE owner = $1 AND ended_at IS NOT NULL", owner
        )
        active = await conn.fetchval("SELECT count(*) FROM chat_session WHERE owner = $1 AND ended_at IS NULL", owner)
    assert (saved, active) == (1, 1)


async def test_keyboard_loading_state_error_toast_and_retry(
    context: BrowserContext, app_server: AppServer, screenshots: Path
) -> None:
    chat = ChatPage(await context.new_page(), app_server.url)
    await chat.signup()
    await chat.send("Keep me safe")
    await expect(chat.finals("user")).to_have_count(1)
    old_id = await chat.conversation_id()
    async with httpx.AsyncClient(base_url=app_server.url) as http:
        # Keyboard reachable: Tab lands on the button; Ctrl+Shift+O triggers it from anywhere.
        await chat.page.locator(".skip-link").focus()
        for _ in range(5):  # brand, log out, then the button
            if await chat.page.evaluate("document.activeElement.id") == "new-chat-button":
                break
            await chat.page.keyboard.press("Tab")
        assert await chat.page.evaluate("document.activeElement.id") == "new-chat-button"

        # Loading state while the save runs, then the failure: a toast, the same panel, nothing lost.
        await http.post("/_test/faults", json={"name": "slow_save"})
        await http.post("/_test/faults", json={"name": "save"})
        await chat.page.locator("#message-input").focus()
        await chat.page.keyboard.press("Control+Shift+O")
        await expect(chat.page.locator("#new-chat-button")).to_be_disabled()
        await expect(chat.page.locator("#new-chat-button .spinner")).to_be_visible()
        await chat.page.screenshot(path=screenshots / "new-chat-saving.png")
        toast = chat.page.get_by_test_id("toast").filter(has_text="Failed to save conversation. Please try again.")
        await expect(toast).to_be_visible()
        await chat.page.screenshot(path=screenshots / "new-chat-failed.png")
        await expect(chat.page.locator("#new-chat-button")).to_be_enabled()
        await expect(chat.panel).to_have_attribute("data-conversation-id", old_id)
        await expect(chat.finals("user").locator(".bubble")).to_have_text(["Keep me safe"])
        conversation = await queries.get_conversation(uuid.UUID(old_id))
        assert conversation is not None
        assert conversation.active

    # Retry succeeds.
    await chat.page.locator("#new-chat-button").click()
    await expect(chat.panel).not_to_have_attribute("data-conversation-id", old_id)
    await expect(chat.page.locator("#history-list [data-testid=history-item]").first).to_have_text("Keep me safe")


async def test_agent_start_failure_shows_retry(context: BrowserContext, app_server: AppServer) -> None:
    chat = ChatPage(await context.new_page(), app_server.url)
    await chat.signup()
    await chat.send("Save me even if the agent fails")
    await expect(chat.finals("user")).to_have_count(1)
    async with httpx.AsyncClient(base_url=app_server.url) as http:
        await http.post("/_test/faults", json={"name": "agent_start"})
    await chat.page.locator("#new-chat-button").click()
    await expect(chat.page.get_by_test_id("agent-status")).to_have_attribute("data-state", "unavailable")
    await expect(chat.page.locator("#agent-status")).to_contain_text("could not be started")
    await expect(chat.page.locator("#history-list [data-testid=history-item]")).to_have_count(1)
    await chat.page.get_by_test_id("agent-retry").click()
    await expect(chat.page.get_by_test_id("toast").filter(has_text="Agent started.")).to_be_visible()
    await chat.send("Hello again")
    await chat.wait_for_agent_reply(2)  # the late greeting, then the answer


async def test_a_second_tab_follows_new_chat(context: BrowserContext, app_server: AppServer) -> None:
    first = ChatPage(await context.new_page(), app_server.url)
    await first.signup()
    await first.send("Two tabs")
    await expect(first.finals("user")).to_have_count(1)
    second = ChatPage(await context.new_page(), app_server.url)
    await second.page.goto(f"{app_server.url}/")
    old_id = await second.conversation_id()
    await first.page.locator("#new-chat-button").click()
    new_id = await first.panel.get_attribute("data-conversation-id")
    await expect(first.panel).not_to_have_attribute("data-conversation-id", old_id)
    # The other tab moves to the new conversation and its sidebar shows the saved one.
    await expect(second.panel).not_to_have_attribute("data-conversation-id", old_id)
    new_id = await first.conversation_id()
    await expect(second.panel).to_have_attribute("data-conversation-id", new_id)
    await expect(second.page.locator("#history-list [data-testid=history-item]").first).to_have_text("Two tabs")
