"""Message actions in Chromium: Copy, the time on hover and on keyboard focus, and Retry on the agent's last reply,
all reachable with the keyboard and said to screen readers; the replaced reply stays, marked."""

from __future__ import annotations

import uuid
from pathlib import Path

from playwright.async_api import BrowserContext, expect

from chatapp.core.database import connection
from tests.e2e.pages import ChatPage
from tests.support import AppServer


async def test_copy_time_and_retry_by_mouse_and_keyboard(
    context: BrowserContext, app_server: AppServer, screenshots: Path
) -> None:
    await context.grant_permissions(["clipboard-read", "clipboard-write"])
    chat = ChatPage(await context.new_page(), app_server.url)
    await chat.signup()
    await chat.wait_for_agent_reply(1)
    await chat.send("Plan a trip to Lisbon")
    await chat.wait_for_agent_reply(2)
    page = chat.page
    reply = chat.finals("agent").last
    first_reply_id = await reply.get_attribute("id")
    meta = reply.locator(".message-meta")
    await expect(meta).to_have_css("opacity", "0")
    await reply.hover()
    await expect(meta).to_have_css("opacity", "1")
    time = reply.get_by_test_id("message-time")
    await expect(time).to_have_text(
        await time.evaluate(
            "el => new Date(el.getAttribute('datetime')).toLocaleTimeString([], {hour: '2-digit', minute: '2-digit'})"
        )
    )
    await page.mouse.move(0, 0)
    await expect(meta).to_have_css("opacity", "0")
    # Retry is on the agent's last reply only.
    await expect(page.get_by_test_id("retry").locator("visible=true")).to_have_count(1)

    # The keyboard: from the transcript, Tab reaches the reply's actions; focus shows them and the time.
    await page.locator("#messages-container").focus()
    retry = reply.get_by_test_id("retry")
    for _ in range(12):
        if await retry.evaluate("el => el === document.activeElement"):
            break
        await page.keyboard.press("Tab")
    await expect(retry).to_be_focused()
    await expect(retry).to_have_accessible_name("Retry: a new reply in place of this one")
    await expect(meta).to_have_css("opacity", "1")
    await page.screenshot(path=screenshots / "message-actions-focus.png")
    await page.keyboard.press("Enter")
    await expect(page.get_by_test_id("announcer")).to_contain_text("Retrying")
    replaced = page.locator(f"#{first_reply_id}")
    await expect(replaced).to_have_attribute("data-superseded", "true")
    await expect(replaced.get_by_test_id("superseded")).to_have_text("replaced")
    await expect(replaced.locator(".visually-hidden").first).to_have_text(
        "Agent (an earlier reply, replaced by Retry):"
    )
    await chat.wait_for_agent_reply(3)
    await expect(page.get_by_test_id("retry").locator("visible=true")).to_have_count(1)
    await expect(chat.finals("agent").last.get_by_test_id("retry")).to_be_visible()
    await page.screenshot(path=screenshots / "message-actions-retried.png")

    # Copy the person's own message, by keyboard too.
    mine = chat.finals("user").last
    copy = mine.get_by_test_id("copy-message")
    await expect(copy).to_have_accessible_name("Copy your message")
    await copy.focus()
    await page.keyboard.press("Enter")
    await expect(copy).to_have_text("Copied")
    await expect(page.get_by_test_id("announcer")).to_have_text("Copied to the clipboard.")
    assert await page.evaluate("navigator.clipboard.readText()") == "Plan a trip to Lisbon"

    cid = uuid.UUID(await chat.conversation_id())
    async with connection() as conn:
        flags = await conn.fetch(
            "SELECT role, superseded_at IS NOT NULL AS s FROM utterance WHERE session = $1 ORDER BY seq", cid
        )
    assert [(r["role"], r["s"]) for r in flags] == [
        ("agent", False),
        ("user", False),
        ("agent", True),
        ("agent", False),
    ]
