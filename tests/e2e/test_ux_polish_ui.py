"""The rough edges a new user hits (issue 16), each clicked through in Chromium, with screenshots."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from playwright.async_api import BrowserContext, expect

from chatapp.accounts.service import User, get_user
from chatapp.conversations import queries
from chatapp.conversations.agent_access import ingest_token
from chatapp.core.database import connection
from chatapp.history import sharing
from tests.e2e.pages import ChatPage, axe_violations
from tests.factories import make_saved
from tests.support import SECRET_KEY, AppServer, client_ip


async def user_of(email: str) -> User:
    async with connection() as conn:
        user = await get_user(await conn.fetchval("SELECT id FROM user_account WHERE email = $1", email))
    assert user is not None
    return user


async def ingest(app_server: AppServer, conversation_id: str, lines: list[tuple[str, str]]) -> None:
    cid = uuid.UUID(conversation_id)
    async with httpx.AsyncClient(base_url=app_server.url) as http:
        response = await http.post(
            f"/api/conversations/{cid}/events",
            json={
                "events": [
                    {"item_id": f"x-{uuid.uuid4().hex}", "role": role, "text": text, "final": True}
                    for role, text in lines
                ]
            },
            headers={"Authorization": f"Bearer {ingest_token(SECRET_KEY, cid)}"},
        )
    assert response.status_code == 200, response.text


async def test_new_chat_in_another_tab_keeps_the_draft_and_says_so(
    context: BrowserContext, app_server: AppServer, screenshots: Path
) -> None:
    first = ChatPage(await context.new_page(), app_server.url)
    await first.signup()
    await first.send("Two tabs, one draft")
    await expect(first.finals("user")).to_have_count(1)
    second = ChatPage(await context.new_page(), app_server.url)
    await second.page.goto(f"{app_server.url}/")
    old_id = await second.conversation_id()
    await second.page.locator("#message-input").fill("Half-written thought about Porto")

    await first.page.locator("#new-chat-button").click()

    await expect(second.panel).not_to_have_attribute("data-conversation-id", old_id)
    await expect(second.page.locator("#message-input")).to_have_value("Half-written thought about Porto")
    toast = second.page.get_by_test_id("toast").filter(has_text="This conversation was saved in another tab")
    await expect(toast).to_contain_text("Your draft was kept")
    await second.page.screenshot(path=screenshots / "ux-draft-kept-other-tab.png")
    saved = await queries.get_conversation(uuid.UUID(old_id))
    assert saved is not None
    assert saved.ended_at is not None


async def test_typing_while_new_chat_saves_keeps_the_draft(context: BrowserContext, app_server: AppServer) -> None:
    chat = ChatPage(await context.new_page(), app_server.url)
    await chat.signup()
    await chat.send("Save me slowly")
    await expect(chat.finals("user")).to_have_count(1)
    old_id = await chat.conversation_id()
    async with httpx.AsyncClient(base_url=app_server.url) as http:
        await http.post("/_test/faults", json={"name": "slow_save"})
    await chat.page.locator("#new-chat-button").click()
    await expect(chat.page.locator("#new-chat-button")).to_be_disabled()
    await chat.page.locator("#message-input").press_sequentially("typed during the save")
    await expect(chat.panel).not_to_have_attribute("data-conversation-id", old_id)
    await expect(chat.page.locator("#message-input")).to_have_value("typed during the save")
    await expect(chat.page.get_by_test_id("new-chat-status")).to_have_text("Saved · Open")


async def test_back_after_logout_asks_the_server_and_a_logged_out_tab_says_so(
    context: BrowserContext, app_server: AppServer, screenshots: Path
) -> None:
    chat = ChatPage(await context.new_page(), app_server.url)
    await chat.signup()
    response = await chat.page.reload()
    assert response is not None
    assert response.headers["cache-control"] == "no-store"
    cid = await chat.conversation_id()

    other = await context.new_page()
    await other.goto(f"{app_server.url}/history")
    await other.get_by_test_id("logout").click()
    await expect(other).to_have_url(f"{app_server.url}/login")
    await other.go_back()  # the private page is not shown from the cache: the server sends to the login page
    await expect(other).to_have_url(f"{app_server.url}/login?next=%2Fhistory")
    await expect(other.get_by_role("heading", name="Log in")).to_be_visible()

    await chat.page.locator("#message-input").fill("Are you still there?")
    await chat.page.locator("#message-input").press("Enter")
    toast = chat.page.get_by_test_id("toast").filter(has_text="You were logged out — log in again")
    await expect(toast).to_be_visible()
    await expect(toast.get_by_role("link", name="Log in")).to_have_attribute("href", "/login?next=%2F")
    await expect(chat.page.locator("#message-input")).to_have_value("Are you still there?")
    await chat.page.screenshot(path=screenshots / "ux-logged-out-toast.png")
    async with connection() as conn:
        count = await conn.fetchval(
            "SELECT count(*) FROM utterance WHERE session = $1 AND role = 'user'", uuid.UUID(cid)
        )
    assert count == 0


async def test_reload_opens_a_long_transcript_at_the_newest_message(
    context: BrowserContext, app_server: AppServer, screenshots: Path
) -> None:
    chat = ChatPage(await context.new_page(), app_server.url)
    await chat.signup()
    await chat.wait_for_agent_reply(1)
    lines = [("user" if n % 2 else "agent", f"Line {n} about the trip") for n in range(40)]
    await ingest(app_server, await chat.conversation_id(), lines)
    await chat.page.reload()
    await expect(chat.messages.last).to_contain_text("Line 39")
    await expect(chat.messages.last).to_be_in_viewport()
    at_bottom = await chat.page.evaluate(
        "() => { const m = document.getElementById('messages-container');"
        " return m.scrollHeight > m.clientHeight && m.scrollHeight - m.scrollTop - m.clientHeight < 4; }"
    )
    assert at_bottom
    await chat.page.screenshot(path=screenshots / "ux-reload-at-newest.png")


async def test_a_conversation_continued_before_reopening_existed_still_links_back(
    context: BrowserContext, app_server: AppServer
) -> None:
    """Continue used to fork a new entry: such entries (existing data) still say "Continued from …"."""
    chat = ChatPage(await context.new_page(), app_server.url)
    user = await user_of(await chat.signup())
    origin = await make_saved(user, "Kyoto in spring", datetime.now(UTC) - timedelta(days=1))
    fork = await make_saved(user, "And now Osaka", datetime.now(UTC) - timedelta(hours=1))
    async with connection() as conn:
        await conn.execute("UPDATE chat_session SET continued_from = $2 WHERE id = $1", fork, origin)
    await chat.page.goto(f"{app_server.url}/history/{fork}")
    link = chat.page.get_by_test_id("continued-from").get_by_role("link", name="“Kyoto in spring”")
    await expect(link).to_have_attribute("href", f"/history/{origin}")
    saved = await queries.get_conversation(fork)
    assert saved is not None
    assert saved.continued_from == origin


async def test_history_filters_survive_back_and_bad_ranges_are_inline_errors(
    context: BrowserContext, app_server: AppServer, screenshots: Path
) -> None:
    chat = ChatPage(await context.new_page(), app_server.url)
    user = await user_of(await chat.signup())
    now = datetime.now(UTC)
    await make_saved(user, "Trip to Kyoto", now - timedelta(hours=1))
    await make_saved(user, "Trip to Lima", now - timedelta(hours=2))
    page = chat.page
    await page.goto(f"{app_server.url}/history")
    items = page.get_by_test_id("history-item")
    await expect(items).to_have_count(2)

    await page.get_by_role("searchbox").fill("kyoto")
    await expect(items).to_have_count(1)
    await expect(page).to_have_url(f"{app_server.url}/history?q=kyoto&from=&to=")
    # Its read-only page (a click would continue it in the chat panel, out of the saved list meanwhile).
    await page.goto(app_server.url + str(await items.first.locator("a").first.get_attribute("href")))
    await expect(page.get_by_test_id("conversation-title")).to_have_text("Trip to Kyoto")
    await page.go_back()
    await expect(page.get_by_role("searchbox")).to_have_value("kyoto")
    await expect(items).to_have_count(1)

    await page.get_by_role("searchbox").fill("")
    await expect(items).to_have_count(2)
    await page.locator("#search-from").fill("2024-05-10")
    await page.locator("#search-to").fill("2024-05-01")
    error = page.get_by_test_id("range-error")
    await expect(error).to_have_text("From must be on or before To.")
    await expect(page.locator("#search-from")).to_have_attribute("aria-invalid", "true")
    await expect(page.get_by_test_id("history-empty")).to_contain_text("Fix the dates")
    await page.screenshot(path=screenshots / "ux-history-range-error.png")
    await page.locator("#search-to").fill("2024-05-20")
    await expect(error).to_be_hidden()
    await expect(page.get_by_test_id("history-empty")).to_have_text("No conversations in this range.")

    for query, message in [
        ("from=banana", "From must be a date"),
        ("to=9999-12-31", "must be between 0001-01-02 and 9999-12-30"),
    ]:
        response = await page.goto(f"{app_server.url}/history?{query}")
        assert response is not None
        assert response.status == 400
        await expect(page.get_by_test_id("range-error")).to_contain_text(message)
        await expect(page.get_by_role("searchbox")).to_be_visible()


async def test_keyboard_focus_the_transcript_log_the_status_and_the_help_dialog(
    context: BrowserContext, app_server: AppServer, screenshots: Path
) -> None:
    chat = ChatPage(await context.new_page(), app_server.url)
    await chat.signup()
    page = chat.page
    await expect(page.locator("#message-input")).to_be_focused()
    log = page.locator("#messages-container")
    await expect(log).to_have_attribute("role", "log")
    await expect(log).to_have_attribute("tabindex", "0")
    await expect(page.locator("#agent-status")).to_have_attribute("role", "status")
    await log.focus()
    await page.keyboard.press("?")
    dialog = page.get_by_test_id("help-dialog")
    await expect(dialog).to_be_visible()
    await expect(dialog).to_contain_text("Ctrl+Shift+O")
    await page.screenshot(path=screenshots / "ux-help-dialog.png")
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    await page.locator("#message-input").press("?")  # typing a question mark is just typing
    await expect(dialog).to_be_hidden()
    await expect(page.locator("#message-input")).to_have_value("?")
    await page.get_by_role("button", name="Keyboard shortcuts").click()
    await expect(dialog).to_be_visible()
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()


@pytest.mark.parametrize("scheme", ["light", "dark"])
async def test_axe_finds_nothing_serious_on_login_chat_history_and_detail(
    new_context: Any, app_server: AppServer, screenshots: Path, scheme: Literal["light", "dark"]
) -> None:
    # axe is injected as a script, which a strict CSP would block: the test browser ignores CSP.
    context: BrowserContext = await new_context(
        bypass_csp=True, color_scheme=scheme, extra_http_headers={"X-Forwarded-For": client_ip()}
    )
    chat = ChatPage(await context.new_page(), app_server.url)
    page = chat.page
    await page.goto(f"{app_server.url}/login")
    found = {"login": await axe_violations(page)}
    await page.screenshot(path=screenshots / f"ux-login-{scheme}.png")
    user = await user_of(await chat.signup())
    saved = await make_saved(user, "Trip to Kyoto", datetime.now(UTC) - timedelta(hours=1))
    # A transcript long enough to scroll, so scrollable-region-focusable has something to check.
    await ingest(app_server, await chat.conversation_id(), [("user", f"Question {n}") for n in range(30)])
    await expect(chat.finals("user")).to_have_count(30)
    for name, path in [("chat", "/"), ("history", "/history"), ("detail", f"/history/{saved}")]:
        if path != "/":
            await page.goto(f"{app_server.url}{path}")
        await expect(page.locator("main")).to_be_visible()
        found[name] = await axe_violations(page)
        await page.screenshot(path=screenshots / f"ux-{name}-{scheme}.png")
    assert {k: v for k, v in found.items() if v} == {}
    background = await page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
    assert background == ("rgb(15, 20, 25)" if scheme == "dark" else "rgb(246, 247, 249)")


async def test_the_composer_grows_with_its_text_then_scrolls(
    context: BrowserContext, app_server: AppServer, screenshots: Path
) -> None:
    chat = ChatPage(await context.new_page(), app_server.url)
    await chat.signup()
    box = chat.page.locator("#message-input")
    start = await box.evaluate("el => el.offsetHeight")
    await box.press_sequentially("Day one: Lisbon")
    await box.press("Shift+Enter")
    await box.press_sequentially("Day two: Sintra")
    grown = await box.evaluate("el => el.offsetHeight")
    assert grown > start
    await box.evaluate(
        "el => { el.focus();"
        " document.execCommand('insertText', false, Array(20).fill('A pasted paragraph').join('\\n')); }"
    )
    await expect(box).to_have_js_property("offsetHeight", 160)
    assert await box.evaluate("el => el.scrollHeight > el.clientHeight && getComputedStyle(el).overflowY === 'auto'")
    await chat.page.screenshot(path=screenshots / "ux-composer-grown.png")
    await box.press("Enter")
    await expect(box).to_have_value("")
    assert await box.evaluate("el => el.offsetHeight") == start


async def test_a_revoked_share_link_says_it_was_revoked(
    new_context: Any, context: BrowserContext, app_server: AppServer, screenshots: Path
) -> None:
    chat = ChatPage(await context.new_page(), app_server.url)
    user = await user_of(await chat.signup())
    saved = await make_saved(user, "Shared then revoked", datetime.now(UTC) - timedelta(hours=1))
    token = await sharing.create(saved)
    await sharing.revoke(saved)
    stranger: BrowserContext = await new_context(bypass_csp=True)  # for axe's injected script
    page = await stranger.new_page()
    response = await page.goto(f"{app_server.url}/s/{token}")
    assert response is not None
    assert response.status == 410
    await expect(page.get_by_role("heading", name="No longer available")).to_be_visible()
    await expect(page.get_by_test_id("error-page")).to_contain_text("revoked")
    await expect(page.get_by_role("link", name="Back to chat")).to_have_count(0)
    await page.screenshot(path=screenshots / "ux-share-revoked.png")
    assert await axe_violations(page) == []
    response = await page.goto(f"{app_server.url}/s/never-existed")
    assert response is not None
    assert response.status == 404


async def test_the_header_and_the_tab_title_follow_the_conversation_title(
    context: BrowserContext, app_server: AppServer
) -> None:
    chat = ChatPage(await context.new_page(), app_server.url)
    await chat.signup()
    title = chat.page.get_by_test_id("chat-title")
    await expect(title).to_have_text("New Conversation")
    await chat.send("Plan a week of hiking in the Dolomites with huts")
    await expect(title).to_have_text("Plan a week of hiking in the Dolomites with huts")
    await chat.page.reload()
    await expect(title).to_have_text("Plan a week of hiking in the Dolomites with huts")
    cid = await chat.conversation_id()
    await chat.page.locator("#new-chat-button").click()
    await expect(chat.panel).not_to_have_attribute("data-conversation-id", cid)

    await chat.page.goto(f"{app_server.url}/history/{cid}")
    await expect(chat.page).to_have_title("Plan a week of hiking in the Dolomites with huts · chatapp")
    await chat.page.get_by_text("Rename").click()
    await chat.page.locator("#rename-input").fill("Dolomites")
    await chat.page.get_by_role("button", name="Save").click()
    await expect(chat.page.get_by_test_id("conversation-title")).to_have_text("Dolomites")
    await expect(chat.page).to_have_title("Dolomites · chatapp")
    assert (await queries.get_conversation(uuid.UUID(cid))).title == "Dolomites"  # type: ignore[union-attr]


async def test_phone_layout_gives_the_transcript_the_screen(
    new_context: Any, app_server: AppServer, screenshots: Path
) -> None:
    context: BrowserContext = await new_context(
        viewport={"width": 390, "height": 844}, extra_http_headers={"X-Forwarded-For": client_ip()}
    )
    chat = ChatPage(await context.new_page(), app_server.url)
    await chat.signup()
    await chat.wait_for_agent_reply(1)
    page = chat.page
    for scheme in ("light", "dark"):
        await page.emulate_media(color_scheme=scheme)
        await page.screenshot(path=screenshots / f"ux-phone-{scheme}.png")
    assert await page.evaluate("document.scrollingElement.scrollWidth <= window.innerWidth")
    await expect(page.locator("#history-list")).to_be_hidden()
    await expect(page.locator("#message-input")).to_be_in_viewport()
    await expect(page.locator("#new-chat-button")).to_be_in_viewport()
    header = await page.locator("#messages-container").evaluate("el => el.getBoundingClientRect().top")
    print(f"phone: the transcript starts {header:.0f} px from the top")
    assert header <= 200, header  # was 232 px of bars above the transcript
    small = await page.evaluate(
        """() => [...document.querySelectorAll('button, a, summary, textarea')]
             .filter(el => el.offsetParent !== null && !el.closest('.visually-hidden, .skip-link, dialog'))
             .map(el => [el.id || el.textContent.trim().slice(0, 20), el.getBoundingClientRect().height])
             .filter(([, h]) => h < 44)"""
    )
    assert small == []
    await chat.send("Hello from the phone")
    await expect(chat.finals("user")).to_have_count(1)
