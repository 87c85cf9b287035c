"""History in the browser: infinite scroll, search, rename/delete seen by another tab, export, share."""

from __future__ import annotations

import json
from pathlib import Path

from playwright.async_api import Browser, BrowserContext, expect

from chatapp.core.database import connection
from tests.e2e.pages import signed_up_with_history
from tests.support import AppServer


async def test_scrolling_loads_the_next_page_and_search_narrows(
    context: BrowserContext, app_server: AppServer, screenshots: Path
) -> None:
    chat, ids = await signed_up_with_history(context, app_server, 45)
    page = chat.page
    await page.goto(f"{app_server.url}/history")
    items = page.get_by_test_id("history-item")
    await expect(items).to_have_count(20)
    await page.screenshot(path=screenshots / "history.png")
    await items.last.scroll_into_view_if_needed()
    await expect(items).to_have_count(40)
    await page.get_by_test_id("history-item").last.scroll_into_view_if_needed()
    await expect(items).to_have_count(45)
    shown = await items.evaluate_all("els => els.map(e => e.dataset.conversationId)")
    assert shown == ids
    headings = await page.get_by_test_id("history-group").all_inner_texts()
    assert len(headings) == len(set(headings))

    await page.get_by_role("searchbox").fill("kyoto")
    await expect(items).to_have_count(1)
    await expect(page.get_by_test_id("snippet").locator("mark")).to_have_text("Kyoto")
    await expect(page).to_have_url(f"{app_server.url}/history?q=kyoto&from=&to=")
    await page.screenshot(path=screenshots / "history-search.png")
    await page.get_by_role("searchbox").fill("")
    await expect(items).to_have_count(20)


async def test_rename_and_delete_update_the_page_and_another_tabs_sidebar(
    context: BrowserContext, app_server: AppServer, screenshots: Path
) -> None:
    chat, ids = await signed_up_with_history(context, app_server, 2)
    sidebar = chat.page.locator("#history-list [data-testid=history-item]")
    await chat.page.reload()
    await expect(sidebar).to_have_count(2)

    detail = await context.new_page()
    await detail.goto(f"{app_server.url}/history/{ids[0]}")
    await detail.get_by_text("Rename").click()
    await detail.locator("#rename-input").fill("Cherry blossoms in Kyoto")
    await detail.get_by_role("button", name="Save").click()
    await expect(detail.get_by_test_id("conversation-title")).to_have_text("Cherry blossoms in Kyoto")
    await expect(sidebar.first).to_have_text("Cherry blossoms in Kyoto")  # the other tab, live
    await detail.screenshot(path=screenshots / "history-detail.png", full_page=True)

    await detail.get_by_test_id("delete").click()
    await detail.get_by_test_id("delete-confirm").click()
    await expect(detail).to_have_url(f"{app_server.url}/history")
    await expect(detail.get_by_test_id("toast-undo")).to_be_visible()
    await expect(detail.get_by_test_id("history-item")).to_have_count(1)
    await expect(sidebar).to_have_count(1)
    async with connection() as conn:  # hidden, restorable for the undo window, then purged
        assert await conn.fetchval("SELECT deleted_at IS NOT NULL FROM chat_session WHERE id = $1::uuid", ids[0])


async def test_export_downloads_and_a_share_link_opens_in_a_fresh_browser(
    context: BrowserContext, browser: Browser, app_server: AppServer
) -> None:
    chat, ids = await signed_up_with_history(context, app_server, 1)
    page = chat.page
    await page.goto(f"{app_server.url}/history/{ids[0]}")
    async with page.expect_download() as download_info:
        await page.get_by_test_id("export-json").click()
    download = await download_info.value
    assert download.suggested_filename.endswith("-trip-00.json")
    document = json.loads(Path(await download.path()).read_text())
    assert [u["text"] for u in document["utterances"]] == ["Trip 00"]
    async with page.expect_download() as md_info:
        await page.get_by_test_id("export-md").click()
    assert "Trip 00" in Path(await (await md_info.value).path()).read_text()

    await page.get_by_test_id("share-create").click()
    url = await page.get_by_test_id("share-url").input_value()
    assert "/s/" in url
    stranger = await browser.new_context()
    try:
        shared = await stranger.new_page()
        await shared.goto(url)
        await expect(shared.get_by_test_id("conversation-title")).to_have_text("Trip 00")
        await expect(shared.get_by_test_id("transcript-line")).to_have_count(1)
        assert await shared.locator("meta[name=robots]").get_attribute("content") == "noindex, nofollow"
        await page.get_by_test_id("share-revoke").click()
        await expect(page.get_by_test_id("share-create")).to_be_visible()
        response = await shared.goto(url)
        assert response is not None
        assert response.status == 410  # revoked, and the page says so
    finally:
        await stranger.close()
