"""History search as a person types it: results at every keystroke, a typo forgiven, the count, and a slow answer
to an earlier keystroke never replacing the answer to the latest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from playwright.async_api import BrowserContext, expect

from chatapp.accounts.service import get_user
from chatapp.core.database import connection
from tests.e2e.pages import ChatPage
from tests.factories import make_saved
from tests.support import AppServer


async def test_results_follow_every_keystroke_forgive_a_typo_and_are_counted(
    context: BrowserContext, app_server: AppServer, screenshots: Path
) -> None:
    chat = ChatPage(await context.new_page(), app_server.url)
    email = await chat.signup()
    async with connection() as conn:
        user = await get_user(await conn.fetchval("SELECT id FROM user_account WHERE email = $1", email))
    assert user is not None
    now = datetime.now(UTC)
    reykjavik = await make_saved(
        user, "Weekend in Reykjavik", now - timedelta(hours=1), [("user", "Northern lights in Reykjavik")]
    )
    await make_saved(user, "Reykjavik again", now - timedelta(days=2), [("user", "Back to Reykjavik for the pools")])
    lisbon = await make_saved(user, "Lisbon food tour", now - timedelta(hours=3), [("user", "Pastéis in Lisbon")])
    page = chat.page
    await page.goto(f"{app_server.url}/history")
    items = page.get_by_test_id("history-item")
    count = page.get_by_test_id("result-count")
    await expect(items).to_have_count(3)
    await expect(count).to_be_empty()

    search = page.get_by_role("searchbox")
    await search.press_sequentially("Reyk", delay=60)
    await expect(items).to_have_count(2)
    await expect(count).to_have_text("2 conversations match “Reyk”")
    await expect(page.get_by_test_id("snippet").locator("mark").first).to_have_text("Reykjavik")
    await page.screenshot(path=screenshots / "search-as-you-type.png")
    await search.fill("Lisbn")  # a typo in a title
    await expect(items).to_have_count(1)
    await expect(items.first).to_have_attribute("data-conversation-id", str(lisbon))
    await expect(count).to_have_text("1 conversation matches “Lisbn”")

    # The answer to "Lisbon" is slow; "Weekend" is typed meanwhile. The answer to "Lisbon" is never shown (the
    # form's hx-sync aborts it), not even for a moment: every set of results shown from here on is recorded
    # (once each: the count's out-of-band swap settles too).
    await page.evaluate(
        """() => { window.__shown = [];
             document.addEventListener("htmx:afterSettle", () => {
               const ids = [...document.querySelectorAll('[data-testid=history-item]')]
                 .map(e => e.dataset.conversationId);
               const last = window.__shown[window.__shown.length - 1];
               if (!last || last.join() !== ids.join()) window.__shown.push(ids); }); }"""
    )
    async with httpx.AsyncClient(base_url=app_server.url) as http:
        await http.post("/_test/faults", json={"name": "slow_search"})
    async with page.expect_request(lambda r: "q=Lisbon" in r.url):
        await search.fill("Lisbon")
    await search.fill("Weekend")
    await expect(items).to_have_count(1)
    await expect(items.first).to_have_attribute("data-conversation-id", str(reykjavik))
    await page.wait_for_timeout(2_000)  # the slow answer has come and gone
    assert await page.evaluate("window.__shown") == [[str(reykjavik)]]
    await expect(count).to_have_text("1 conversation matches “Weekend”")
    await expect(page).to_have_url(f"{app_server.url}/history?q=Weekend&from=&to=")
    async with connection() as conn:
        assert await conn.fetchval("SELECT title FROM chat_session WHERE id = $1", reykjavik) == "Weekend in Reykjavik"
