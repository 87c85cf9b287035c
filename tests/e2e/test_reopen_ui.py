"""The conversation model as a person meets it: the conversation being had is in the sidebar (marked current, its
title live in every tab), and a saved one opens in the chat panel and continues in place."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from playwright.async_api import BrowserContext, expect

from chatapp.accounts.service import User, get_user
from chatapp.conversations import queries
from chatapp.core.database import connection
from tests.e2e.pages import ChatPage
from tests.factories import make_saved
from tests.support import AppServer


async def user_of(email: str) -> User:
    async with connection() as conn:
        user = await get_user(await conn.fetchval("SELECT id FROM user_account WHERE email = $1", email))
    assert user is not None
    return user


async def test_the_current_conversation_is_in_every_tabs_sidebar_from_its_first_message(
    context: BrowserContext, app_server: AppServer, screenshots: Path
) -> None:
    chat = ChatPage(await context.new_page(), app_server.url)
    user = await user_of(await chat.signup())
    await make_saved(user, "Kyoto in spring", datetime.now(UTC) - timedelta(days=1))
    await chat.page.reload()
    other = ChatPage(await context.new_page(), app_server.url)
    await other.page.goto(app_server.url)
    for tab in (chat, other):
        await expect(tab.page.get_by_test_id("current-conversation")).to_have_count(0)  # nothing said yet

    await chat.send("Plan a trip to Lisbon")
    for tab in (chat, other):
        current = tab.page.get_by_test_id("current-conversation")
        await expect(current).to_have_text("Current: Plan a trip to Lisbon")
        await expect(current.get_by_role("link")).to_have_attribute("aria-current", "page")
        await expect(tab.page.locator("#history-list li").first).to_have_attribute(
            "data-testid", "current-conversation"
        )
    await chat.wait_for_agent_reply(1)
    await chat.page.locator(".sidebar").screenshot(path=screenshots / "sidebar-current-conversation.png")
    await chat.page.screenshot(path=screenshots / "chat-with-current-in-sidebar.png")
    active = await queries.get_active(user.id)
    assert active is not None
    assert str(active.id) == await chat.conversation_id()


async def test_a_saved_conversation_opens_in_the_chat_panel_and_continues_in_place(
    context: BrowserContext, app_server: AppServer, screenshots: Path
) -> None:
    chat = ChatPage(await context.new_page(), app_server.url)
    user = await user_of(await chat.signup())
    lines = [("user", "Plan five days in Kyoto"), ("agent", "Temples or food?"), ("user", "Temples, please")]
    kyoto = await make_saved(user, "Kyoto in spring", datetime.now(UTC) - timedelta(days=2), lines)  # type: ignore[arg-type]
    await make_saved(user, "Weekend in Porto", datetime.now(UTC) - timedelta(days=1))
    page = chat.page
    await page.reload()
    await chat.send("What about Vienna?")  # the active conversation, which reopening saves first
    await chat.wait_for_agent_reply(1)
    vienna = await chat.conversation_id()

    await page.locator(f'#history-list [data-conversation-id="{kyoto}"] a').click()
    await expect(chat.panel).to_have_attribute("data-conversation-id", str(kyoto))
    await expect(page).to_have_url(re.compile(f"/chat/{kyoto}$"))
    await expect(page.get_by_test_id("chat-title")).to_have_text("Kyoto in spring")
    await expect(chat.finals("user").locator(".bubble")).to_have_text(["Plan five days in Kyoto", "Temples, please"])
    await expect(page.get_by_test_id("current-conversation")).to_have_text("Current: Kyoto in spring")
    saved_first = page.locator("#history-list [data-testid=history-item]").first
    await expect(saved_first).to_have_attribute("data-conversation-id", vienna)  # saved, on top of the saved ones

    await chat.send("Add a day in Nara")
    await expect(chat.finals("user")).to_have_count(3)
    await chat.wait_for_agent_reply(2)  # answers the new message only, not the old "Temples, please"
    await page.screenshot(path=screenshots / "reopened-conversation.png")
    await page.reload()  # the address is the conversation's
    await expect(chat.panel).to_have_attribute("data-conversation-id", str(kyoto))

    other = ChatPage(await context.new_page(), app_server.url)
    await other.page.goto(f"{app_server.url}/chat/{kyoto}")  # a second tab on the reopened conversation
    await expect(other.panel).to_have_attribute("data-conversation-id", str(kyoto))

    await page.locator("#new-chat-button").click()
    await expect(chat.panel).not_to_have_attribute("data-conversation-id", str(kyoto))
    await expect(page).to_have_url(re.compile(r"/$"))
    await expect(other.panel).not_to_have_attribute("data-conversation-id", str(kyoto))  # it follows, to "/"
    await expect(other.page).to_have_url(re.compile(r"/$"))
    await expect(page.locator("#history-list [data-testid=history-item]").first).to_have_attribute(
        "data-conversation-id", str(kyoto)
    )  # the conversation continued last is on top
    saved = await queries.get_conversation(uuid.UUID(str(kyoto)))
    assert saved is not None
    assert saved.ended_at is not None
    assert saved.title == "Kyoto in spring"
    assert saved.message_count == 5
    async with connection() as conn:
        entries = await conn.fetchval(
            "SELECT count(*) FROM chat_session WHERE owner = $1 AND ended_at IS NOT NULL", user.id
        )
    assert entries == 3  # Kyoto, Porto, Vienna: no new entry for the continued one

    await page.goto(f"{app_server.url}/history/{kyoto}")
    await expect(page.get_by_test_id("reopened-divider")).to_have_count(1)
    await page.screenshot(path=screenshots / "reopened-conversation-page.png", full_page=True)
