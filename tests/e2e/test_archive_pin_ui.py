"""Archive and pin in the browser: from the list and from a conversation's page, with a second tab's sidebar
following live, and the database agreeing at the end."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from playwright.async_api import BrowserContext, expect

from chatapp.core.database import connection
from tests.e2e.pages import signed_up_with_history
from tests.support import AppServer, client_ip


async def test_pin_and_archive_from_the_list_and_the_page_while_another_tab_follows(
    context: BrowserContext, app_server: AppServer, screenshots: Path
) -> None:
    chat, ids = await signed_up_with_history(context, app_server, 3)
    await chat.page.reload()
    sidebar = chat.page.locator("#history-list [data-testid=history-item]")
    await expect(sidebar).to_have_count(3)

    page = await context.new_page()
    await page.goto(f"{app_server.url}/history")
    items = page.locator("#history-items [data-testid=history-item]")
    await expect(items).to_have_count(3)

    await page.locator(f'[data-conversation-id="{ids[2]}"] [data-testid="pin-button"]').click()
    await expect(page.get_by_test_id("pinned-group")).to_be_visible()
    await expect(items.first).to_have_attribute("data-conversation-id", ids[2])
    await expect(items.first.get_by_test_id("pinned-badge")).to_be_visible()
    await expect(items).to_have_count(3)  # on top, and not again in its date place
    await expect(items.first.get_by_test_id("pin-button")).to_be_focused()  # the keyboard followed the row
    await expect(items.first.get_by_test_id("pin-button")).to_have_text("Unpin")
    await expect(sidebar.first).to_have_attribute("data-conversation-id", ids[2])  # the other tab, live
    await expect(sidebar.first).to_have_attribute("data-pinned", "true")

    await page.locator(f'[data-conversation-id="{ids[1]}"] [data-testid="archive-button"]').click()
    await expect(items).to_have_count(2)
    await expect(sidebar).to_have_count(2)
    await expect(chat.page.locator(f'#history-list [data-conversation-id="{ids[1]}"]')).to_have_count(0)
    await page.screenshot(path=screenshots / "history-pinned.png", full_page=True)

    await page.get_by_test_id("view-archived").click()
    await expect(page).to_have_url(f"{app_server.url}/history/archived")
    await expect(items).to_have_count(1)
    await expect(items.first.get_by_test_id("archived-badge")).to_be_visible()
    await page.screenshot(path=screenshots / "history-archived.png", full_page=True)
    await items.first.get_by_test_id("archive-button").click()  # Unarchive
    await expect(page.get_by_test_id("history-empty")).to_contain_text("No archived conversations")
    await expect(sidebar).to_have_count(3)

    await page.goto(f"{app_server.url}/history/{ids[0]}")
    flags = page.get_by_test_id("flags")
    await flags.get_by_test_id("pin-button").click()
    await expect(flags.get_by_test_id("pinned-badge")).to_be_visible()
    await expect(flags.get_by_test_id("pin-button")).to_have_text("Unpin")
    await expect(sidebar.first).to_have_attribute("data-conversation-id", ids[0])  # newest pin first
    await expect(sidebar.nth(1)).to_have_attribute("data-conversation-id", ids[2])
    await page.screenshot(path=screenshots / "history-detail-pinned.png", full_page=True)
    await chat.page.screenshot(path=screenshots / "chat-sidebar-pinned.png")
    await flags.get_by_test_id("archive-button").click()
    await expect(flags.get_by_test_id("archived-badge")).to_be_visible()
    await expect(flags.get_by_test_id("pin-button")).to_have_count(0)
    await expect(flags.get_by_test_id("archive-button")).to_have_text("Unarchive")
    await expect(chat.page.locator(f'#history-list [data-conversation-id="{ids[0]}"]')).to_have_count(0)
    await expect(sidebar).to_have_count(2)

    async with connection() as conn:
        rows = await conn.fetch(
            "SELECT id, pinned_at IS NOT NULL AS pinned, archived_at IS NOT NULL AS archived FROM chat_session"
            " WHERE id = ANY($1::uuid[])",
            [uuid.UUID(i) for i in ids],
        )
    state = {str(r["id"]): (r["pinned"], r["archived"]) for r in rows}
    assert state == {ids[0]: (False, True), ids[1]: (False, False), ids[2]: (True, False)}


async def test_phone_list_keeps_the_buttons_reachable(
    context: BrowserContext, app_server: AppServer, screenshots: Path
) -> None:
    chat, ids = await signed_up_with_history(context, app_server, 4)
    page = chat.page
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.goto(f"{app_server.url}/history")
    await page.locator(f'[data-conversation-id="{ids[3]}"] [data-testid="pin-button"]').click()
    items = page.locator("#history-items [data-testid=history-item]")
    await expect(items.first).to_have_attribute("data-conversation-id", ids[3])
    button = items.first.get_by_test_id("archive-button")
    box = await button.bounding_box()
    assert box is not None
    assert box["x"] + box["width"] <= 390  # no sideways scrolling to reach it
    assert box["height"] >= 44  # a thumb-sized target
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await page.screenshot(path=screenshots / "history-pinned-phone.png", full_page=True)
    await page.goto(f"{app_server.url}/history/{ids[3]}")
    await page.screenshot(path=screenshots / "history-detail-phone.png", full_page=True)
    async with connection() as conn:
        assert await conn.fetchval("SELECT pinned_at IS NOT NULL FROM chat_session WHERE id = $1::uuid", ids[3])


async def test_row_buttons_work_without_javascript(
    context: BrowserContext, new_context: Any, app_server: AppServer, screenshots: Path
) -> None:
    """The rows' buttons post the list's one form (form/formaction): a browser without JS pins, archives and
    deletes from the list and comes back to the same view, the CSRF token and the list's fields in that form."""
    chat, ids = await signed_up_with_history(context, app_server, 3)
    plain: BrowserContext = await new_context(
        java_script_enabled=False,
        storage_state=await context.storage_state(),
        extra_http_headers={"X-Forwarded-For": client_ip()},
    )
    page = await plain.new_page()
    await page.goto(f"{app_server.url}/history")
    items = page.locator("#history-items [data-testid=history-item]")
    await expect(items).to_have_count(3)
    await expect(page.locator("#row-actions input[name=_csrf_token]")).to_have_count(1)

    await page.locator(f'[data-conversation-id="{ids[2]}"] [data-testid="pin-button"]').click()
    await expect(page).to_have_url(f"{app_server.url}/history")
    await expect(page.get_by_test_id("pinned-group")).to_be_visible()
    await expect(items.first).to_have_attribute("data-conversation-id", ids[2])
    await page.screenshot(path=screenshots / "history-no-js-pinned.png", full_page=True)

    await page.locator(f'[data-conversation-id="{ids[1]}"] [data-testid="archive-button"]').click()
    await expect(items).to_have_count(2)
    await page.goto(f"{app_server.url}/history/archived")
    await items.first.get_by_test_id("archive-button").click()  # Unarchive: back to the archived view, now empty
    await expect(page).to_have_url(f"{app_server.url}/history?view=archived")
    await expect(page.get_by_test_id("history-empty")).to_contain_text("No archived conversations")

    await page.goto(f"{app_server.url}/history")
    await page.locator(f'[data-conversation-id="{ids[0]}"] [data-testid="delete-button"]').click()
    await expect(page.get_by_test_id("deleted-notice")).to_contain_text("Trip 00")
    await expect(page.locator(f'#history-items [data-conversation-id="{ids[0]}"]')).to_have_count(0)
    async with connection() as conn:
        rows = await conn.fetch(
            "SELECT id, pinned_at IS NOT NULL AS pinned, archived_at IS NOT NULL AS archived FROM chat_session"
            " WHERE id = ANY($1::uuid[]) AND deleted_at IS NULL",
            [uuid.UUID(i) for i in ids],
        )
    assert {str(r["id"]): (r["pinned"], r["archived"]) for r in rows} == {
        ids[1]: (False, False),
        ids[2]: (True, False),
    }
    await chat.page.close()
