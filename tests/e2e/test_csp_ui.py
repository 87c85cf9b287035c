"""Under the app's Content-Security-Policy the pages still work (chat with the streamed reply, history search,
a share page) and the browser reports no violation: no inline script or style, no eval, nothing off-site."""

from __future__ import annotations

from typing import Any

from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, expect

from tests.e2e.pages import WATCH_VIOLATIONS, ChatPage
from tests.support import AppServer

# Recorded from the first script on every page, before the app's own scripts run.


class Watched:
    """CSP reports in the console, and CSP violation events, of every page opened in a context."""

    def __init__(self) -> None:
        self.console: list[str] = []

    async def attach(self, context: BrowserContext) -> None:
        await context.add_init_script(WATCH_VIOLATIONS)
        context.on("console", self._on_console)

    def _on_console(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text or message.text.startswith("Refused to"):
            self.console.append(f"{message.text} at {message.location}")

    @staticmethod
    async def violations(page: Page) -> list[Any]:
        return list(await page.evaluate("window.__cspViolations || []"))


async def test_chat_history_and_share_pages_work_with_no_csp_violation(
    context: BrowserContext, browser: Browser, app_server: AppServer
) -> None:
    watched = Watched()
    await watched.attach(context)
    chat = ChatPage(await context.new_page(), app_server.url)
    page = chat.page
    response = await page.goto(f"{app_server.url}/login")
    assert response is not None
    assert "default-src 'self'" in response.headers["content-security-policy"]
    await chat.signup()
    await chat.wait_for_agent_reply(1)  # the greeting arrives over SSE
    await chat.send("Plan a trip to Lisbon")
    await expect(chat.finals("user").locator(".bubble")).to_have_text(["Plan a trip to Lisbon"])
    await chat.wait_for_agent_reply(2)
    await expect(chat.finals("agent").nth(1)).to_contain_text("Lisbon")
    # htmx's indicator styles come from app.css, not an injected <style> the policy would block.
    assert await page.locator("head style").count() == 0
    assert await watched.violations(page) == []

    # New Chat saves this conversation; history lists it and searches it.
    first = await chat.conversation_id()
    await page.locator("#new-chat-button").click()
    await expect(chat.panel).not_to_have_attribute("data-conversation-id", first)
    await page.goto(f"{app_server.url}/history")
    await expect(page.get_by_test_id("history-item")).to_have_count(1)
    await page.locator("#search-q").fill("Lisbon")
    await expect(page.get_by_test_id("snippet")).to_have_count(1)
    assert await watched.violations(page) == []

    saved_id = await page.get_by_test_id("history-item").first.get_attribute("data-conversation-id")
    await page.goto(f"{app_server.url}/history/{saved_id}")  # its read-only page (a click continues it)
    await page.get_by_test_id("share-create").click()
    url = await page.get_by_test_id("share-url").input_value()
    assert await watched.violations(page) == []

    stranger = await browser.new_context()
    try:
        await watched.attach(stranger)
        shared = await stranger.new_page()
        await shared.goto(url)
        await expect(shared.get_by_test_id("transcript-line").nth(1)).to_contain_text("Plan a trip to Lisbon")
        assert await watched.violations(shared) == []
    finally:
        await stranger.close()
    assert watched.console == [], watched.console
