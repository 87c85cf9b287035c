"""A person in Chromium, through nginx over HTTPS and HTTP/2, on two app hosts: sign up, type, watch the reply
stream in over the live stream, New Chat, and find the saved conversation in the history."""

from __future__ import annotations

import uuid

import pytest
from playwright.async_api import Browser, Playwright, expect

from tests.e2e.pages import ChatPage
from tests.support import ROOT
from tests.support_browser import CHROMIUM, CHROMIUM_ARGS
from tests.support_hosts import Deployment

pytestmark = pytest.mark.e2e


async def test_a_person_chats_saves_and_finds_it_in_history_through_the_proxy(
    deployment: Deployment, playwright: Playwright
) -> None:
    # A browser of its own rather than pytest-playwright's: its session-wide browser parameter would pull this
    # test among the e2e tests, away from the other operations tests and their deployment.
    browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    try:
        await chats_saves_and_finds_it_in_history(deployment, browser)
    finally:
        await browser.close()


async def chats_saves_and_finds_it_in_history(deployment: Deployment, browser: Browser) -> None:
    # The certificate is the one made for this run; Chromium is told to accept it rather than to trust a CA.
    context = await browser.new_context(ignore_https_errors=True)
    chat = ChatPage(await context.new_page(), deployment.url)
    email = await chat.signup()
    protocol = await chat.page.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol")
    assert protocol == "h2"
    cookies = await context.cookies()
    assert cookies
    assert all(cookie["secure"] for cookie in cookies)

    await chat.wait_for_agent_reply(1)  # the greeting, over the live stream through nginx
    await chat.send("Plan a trip to Lisbon by train")
    await expect(chat.finals("user")).to_have_count(1)
    await chat.wait_for_agent_reply(2)
    await expect(chat.finals("agent").nth(1)).to_contain_text("Lisbon")
    old_id = await chat.conversation_id()

    await chat.page.locator("#new-chat-button").click()
    await expect(chat.panel).not_to_have_attribute("data-conversation-id", old_id)
    await expect(chat.finals("user")).to_have_count(0)
    first_item = chat.page.locator("#history-list [data-testid=history-item]").first
    await expect(first_item).to_have_attribute("data-conversation-id", old_id)
    new_id = await chat.conversation_id()

    await chat.page.goto(f"{deployment.url}/history")
    await expect(chat.page.get_by_text("Plan a trip to Lisbon by train").first).to_be_visible()
    screenshots = ROOT / "test-artifacts" / "screenshots"
    screenshots.mkdir(parents=True, exist_ok=True)
    await chat.page.screenshot(path=screenshots / "operations-history-through-proxy.png")

    rows = await deployment.fetch(
        "SELECT s.id, s.title, s.ended_at IS NOT NULL AS ended FROM chat_session s "
        "JOIN user_account u ON u.id = s.owner WHERE u.email = $1 ORDER BY s.started_at",
        email,
    )
    assert [(row["id"], row["title"], row["ended"]) for row in rows] == [
        (uuid.UUID(old_id), "Plan a trip to Lisbon by train", True),
        (uuid.UUID(new_id), None, False),
    ]
