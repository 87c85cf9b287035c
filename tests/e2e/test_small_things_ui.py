"""The small things of issue 23, each as a person meets it: contrast in both themes (search highlights, message
actions, the New Chat line, a replaced reply, the shared page), the shared page naming the speaker, the phone
layout (the recent list within reach, header buttons on one line) and one clear message in a tab whose account
was deleted."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from playwright.async_api import BrowserContext, Page, expect

from chatapp.accounts.service import User, get_user
from chatapp.core.database import connection
from chatapp.history import sharing
from tests.e2e.pages import ChatPage, axe_violations
from tests.factories import make_saved
from tests.support import AppServer, client_ip


async def user_of(email: str) -> User:
    async with connection() as conn:
        user = await get_user(await conn.fetchval("SELECT id FROM user_account WHERE email = $1", email))
    assert user is not None
    return user


async def one_line(page: Page, selector: str) -> None:
    """Every visible element matched sits on one line: each one's vertical extent overlaps all the others'."""
    boxes = await page.locator(selector).evaluate_all(
        """els => els.filter(e => e.offsetParent !== null)
             .map(e => { const r = e.getBoundingClientRect(); return [r.top, r.bottom]; })"""
    )
    assert len(boxes) > 1, selector
    assert max(top for top, _ in boxes) < min(bottom for _, bottom in boxes), (selector, boxes)


@pytest.mark.parametrize("scheme", ["light", "dark"])
async def test_contrast_holds_in_both_themes_on_the_new_parts(
    new_context: Any, app_server: AppServer, screenshots: Path, scheme: Literal["light", "dark"]
) -> None:
    context: BrowserContext = await new_context(
        bypass_csp=True, color_scheme=scheme, extra_http_headers={"X-Forwarded-For": client_ip()}
    )
    chat = ChatPage(await context.new_page(), app_server.url)
    user = await user_of(await chat.signup())
    page = chat.page
    await chat.wait_for_agent_reply(1)
    await chat.send("Plan a trip to Kyoto")
    await chat.wait_for_agent_reply(2)
    await chat.finals("agent").last.get_by_test_id("retry").click()
    await expect(page.locator('[data-superseded="true"]')).to_have_count(1)
    await chat.wait_for_agent_reply(3)
    await chat.finals("agent").last.hover()  # the message actions and time showing
    found = {"chat": await axe_violations(page)}
    await page.screenshot(path=screenshots / f"small-chat-actions-{scheme}.png")
    cid = await chat.conversation_id()
    await page.locator("#new-chat-button").click()
    await expect(page.get_by_test_id("new-chat-status")).to_have_text("Saved · Open")
    found["chat after New Chat"] = await axe_violations(page)

    await page.goto(f"{app_server.url}/history?q=kyot")
    await expect(page.get_by_test_id("snippet").locator("mark").first).to_be_visible()
    found["search highlights"] = await axe_violations(page)
    await page.screenshot(path=screenshots / f"small-search-{scheme}.png")
    await page.goto(f"{app_server.url}/history/{cid}")
    await expect(page.locator('[data-superseded="true"]')).to_have_count(1)
    found["detail with a replaced reply"] = await axe_violations(page)
    token = await sharing.create(uuid.UUID(cid))
    await page.goto(f"{app_server.url}/s/{token}")
    found["shared"] = await axe_violations(page)
    await page.screenshot(path=screenshots / f"small-shared-{scheme}.png", full_page=True)
    assert {k: v for k, v in found.items() if v} == {}
    assert user.display_name == "Ada Traveller"


async def test_the_shared_page_names_the_speaker_instead_of_you(
    context: BrowserContext, new_context: Any, app_server: AppServer
) -> None:
    chat = ChatPage(await context.new_page(), app_server.url)
    user = await user_of(await chat.signup("Grace Hopper"))
    saved = await make_saved(
        user, "Kyoto in spring", datetime.now(UTC) - timedelta(hours=1), [("user", "Kyoto?"), ("agent", "Yes!")]
    )
    token = await sharing.create(saved)
    stranger: BrowserContext = await new_context()
    page = await stranger.new_page()
    await page.goto(f"{app_server.url}/s/{token}")
    await expect(page.get_by_test_id("speaker")).to_have_text(["Grace Hopper", "Agent"])
    await expect(page.get_by_text("You", exact=True)).to_have_count(0)
    # The owner's own page still says "You".
    await chat.page.goto(f"{app_server.url}/history/{saved}")
    await expect(chat.page.get_by_test_id("speaker")).to_have_text(["You", "Agent"])
    assert await sharing.shared_conversation_id(token) == saved


async def test_the_phone_reaches_the_recent_list_and_keeps_header_buttons_on_one_line(
    new_context: Any, app_server: AppServer, screenshots: Path
) -> None:
    context: BrowserContext = await new_context(
        viewport={"width": 390, "height": 844}, extra_http_headers={"X-Forwarded-For": client_ip()}
    )
    chat = ChatPage(await context.new_page(), app_server.url)
    user = await user_of(await chat.signup())
    now = datetime.now(UTC)
    ids = [
        await make_saved(user, title, now - timedelta(hours=n + 1))
        for n, title in enumerate(["Kyoto in spring", "A long weekend in Reykjavik", "Lisbon food tour"])
    ]
    page = chat.page
    await page.reload()
    await chat.wait_for_agent_reply(1)
    recent = page.locator("#history-list [data-testid=history-item] a")
    await expect(recent).to_have_count(3)
    await expect(recent.first).to_be_in_viewport()
    await one_line(page, ".sidebar > .new-chat, .sidebar > .history-list, .sidebar > .all-history")
    await one_line(page, ".chat-header h1, .chat-header .help-button")
    for scheme in ("light", "dark"):
        await page.emulate_media(color_scheme=scheme)
        await page.screenshot(path=screenshots / f"small-phone-chat-{scheme}.png")
    header = await page.locator("#messages-container").evaluate("el => el.getBoundingClientRect().top")
    assert header <= 200, header
    assert await page.evaluate("document.scrollingElement.scrollWidth <= window.innerWidth")

    await page.goto(f"{app_server.url}/history")
    await one_line(page, ".page-header .button")
    await page.screenshot(path=screenshots / "small-phone-history.png")
    await page.goto(f"{app_server.url}/history/{ids[0]}")
    await page.screenshot(path=screenshots / "small-phone-detail.png", full_page=True)
    await page.goto(f"{app_server.url}/")
    await recent.nth(2).click()  # opens it in the chat panel, to continue it
    await expect(page).to_have_url(f"{app_server.url}/chat/{ids[2]}")
    await expect(page.locator("#chat-panel")).to_have_attribute("data-conversation-id", str(ids[2]))


async def test_a_tab_whose_account_was_deleted_says_so_once(
    context: BrowserContext, app_server: AppServer, screenshots: Path
) -> None:
    chat = ChatPage(await context.new_page(), app_server.url)
    email = await chat.signup()
    user = await user_of(email)
    await chat.send("Plan a trip to Lima")
    await chat.wait_for_agent_reply(2)
    account = await context.new_page()
    await account.goto(f"{app_server.url}/account")
    await account.get_by_text("Delete my account…").click()
    await account.get_by_label("Type your email address to confirm").fill(email)
    await account.get_by_test_id("confirm-delete").click()
    await expect(account.get_by_test_id("account-deleted")).to_be_visible()

    page = chat.page
    notice = page.get_by_test_id("conversation-saved-notice")
    await expect(notice).to_contain_text("This account was deleted, with all its conversations.")
    await page.wait_for_timeout(3_000)  # time enough for a reconnect attempt and its messages
    await expect(page.locator("#connection-state")).to_be_hidden()
    await expect(page.locator('[data-state="unreachable"]')).to_have_count(0)
    await expect(page.get_by_test_id("toast")).to_have_count(0)
    await expect(page.get_by_role("alert")).to_have_count(1)
    await expect(notice).not_to_contain_text("saved")
    await page.screenshot(path=screenshots / "small-account-deleted-tab.png")
    async with connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM user_account WHERE id = $1", user.id) == 0
    async with httpx.AsyncClient(base_url=app_server.url) as http:
        assert (await http.get("/healthz")).status_code == 200
