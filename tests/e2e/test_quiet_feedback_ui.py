"""Quieter feedback (issue 23): New Chat answers with one line in the sidebar instead of a toast, typing right after
it loses nothing, at most one toast shows and never over the newest message, the demo-model notice appears once
and no hint repeats the greeting."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
from playwright.async_api import BrowserContext, expect

from chatapp.core.database import connection
from tests.e2e.pages import ChatPage
from tests.support import AppServer


async def test_new_chat_says_saved_in_one_line_and_keeps_every_character_typed_right_after(
    context: BrowserContext, app_server: AppServer, screenshots: Path
) -> None:
    chat = ChatPage(await context.new_page(), app_server.url)
    await chat.signup()
    await chat.wait_for_agent_reply(1)
    page = chat.page
    # The demo model is mentioned once (the notice above the transcript, not the greeting too), and the hint
    # gives way to the greeting instead of asking the same question.
    panel_text = (await chat.panel.inner_text()).lower()
    assert panel_text.count("offline demo") == 1, panel_text
    await expect(page.locator("#empty-state")).to_be_hidden()

    await chat.send("Plan a trip to Lisbon")
    await chat.wait_for_agent_reply(2)
    old_id = await chat.conversation_id()

    await page.locator("#new-chat-button").click()
    await page.keyboard.type("Cusco for 3 days")  # at once: the request is still on its way
    await expect(chat.panel).not_to_have_attribute("data-conversation-id", old_id)
    box = page.locator("#message-input")
    await expect(box).to_have_value("Cusco for 3 days")
    await expect(box).to_be_focused()
    status = page.get_by_test_id("new-chat-status")
    await expect(status).to_have_text("Saved · Open")
    await expect(
        status.get_by_role("link", name="Open the saved conversation: Plan a trip to Lisbon")
    ).to_have_attribute("href", f"/history/{old_id}")
    await expect(page.get_by_test_id("toast")).to_have_count(0)
    await page.screenshot(path=screenshots / "quiet-new-chat-saved.png")
    await box.press("Enter")
    await expect(chat.finals("user")).to_have_count(1)
    new_id = uuid.UUID(await chat.conversation_id())
    async with connection() as conn:
        said = await conn.fetchval("SELECT text FROM utterance WHERE session = $1 AND role = 'user'", new_id)
    assert said == "Cusco for 3 days"

    # Typing while a slow save is under way goes into the new conversation's text box too.
    async with httpx.AsyncClient(base_url=app_server.url) as http:
        await http.post("/_test/faults", json={"name": "slow_save"})
    await page.keyboard.press("Control+Shift+O")
    await page.keyboard.type("Lima next")
    await expect(chat.panel).not_to_have_attribute("data-conversation-id", str(new_id))
    await expect(box).to_have_value("Lima next")
    await expect(status).to_have_text("Saved · Open")

    # Nothing said: nothing to save, in the same line.
    await box.fill("")
    current = await chat.conversation_id()
    await page.locator("#new-chat-button").click()
    await expect(chat.panel).not_to_have_attribute("data-conversation-id", current)
    await expect(status).to_have_text("Nothing to save · started fresh")
    await expect(page.get_by_test_id("toast")).to_have_count(0)


async def test_one_toast_at_a_time_and_never_over_the_newest_message(
    context: BrowserContext, app_server: AppServer, screenshots: Path
) -> None:
    chat = ChatPage(await context.new_page(), app_server.url)
    await chat.signup()
    await chat.wait_for_agent_reply(1)
    for n in range(8):
        await chat.send(f"Question {n} about a long trip")
    await chat.wait_for_agent_reply(9)
    page = chat.page
    async with httpx.AsyncClient(base_url=app_server.url) as http:
        await http.post("/_test/faults", json={"name": "save", "times": 2})
    for _ in range(2):
        await page.locator("#new-chat-button").click()
        await expect(page.locator("#new-chat-button")).to_be_enabled()
    toast = page.get_by_test_id("toast")
    await expect(toast).to_have_count(1)
    await expect(toast).to_contain_text("Failed to save conversation")
    newest = chat.messages.last
    await expect(newest).to_be_in_viewport()
    toast_box, newest_box = await toast.bounding_box(), await newest.bounding_box()
    assert toast_box is not None
    assert newest_box is not None
    overlap = not (
        toast_box["y"] >= newest_box["y"] + newest_box["height"]
        or newest_box["y"] >= toast_box["y"] + toast_box["height"]
    )
    assert not overlap, (toast_box, newest_box)
    composer = await page.locator("#message-form").bounding_box()
    assert composer is not None
    assert toast_box["y"] >= composer["y"] + composer["height"] - 1  # its own line, under the composer
    await page.screenshot(path=screenshots / "quiet-one-toast.png")
    async with connection() as conn:
        active = await conn.fetchval(
            "SELECT ended_at IS NULL FROM chat_session WHERE id = $1", uuid.UUID(await chat.conversation_id())
        )
    assert active  # the failed saves changed nothing
