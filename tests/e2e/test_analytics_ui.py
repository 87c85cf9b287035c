"""The analytics page in a browser: reached from History, charts drawn as SVG with titles, the numbers in a
table, readable on a desktop and a phone (light and dark), and the same numbers as the database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from playwright.async_api import expect

from chatapp.accounts.service import get_user
from chatapp.conversations.events import Role
from chatapp.core.database import connection
from tests.e2e.pages import ChatPage, axe_violations
from tests.factories import make_saved
from tests.support import AppServer, client_ip

ZONE = "Asia/Kolkata"


async def test_analytics_page_draws_accessible_charts_with_the_databases_numbers(
    new_context: Any, app_server: AppServer, screenshots: Path
) -> None:
    context = await new_context(timezone_id=ZONE, extra_http_headers={"X-Forwarded-For": client_ip()})
    chat = ChatPage(await context.new_page(), app_server.url)
    email = await chat.signup()  # app.js sends the browser's zone as the tz cookie
    async with connection() as conn:
        user = await get_user(await conn.fetchval("SELECT id FROM user_account WHERE email = $1", email))
    assert user is not None
    now = datetime.now(UTC)
    topics = ["Cooking pasta tonight", "Travelling to Kyoto", "Cooking curry", "Kyoto temples", "Gardening roses"]
    for n in range(40):
        lines: list[tuple[Role, str]] = [("user", topics[n % 5]), ("agent", "Tell me more.")] + [("agent", "Sure.")] * (
            n % 3
        )
        await make_saved(user, topics[n % 5], now - timedelta(hours=9 * n + 2), lines, minutes=(2, 9, 25, 70)[n % 4])

    page = chat.page
    refused: list[str] = []  # the strict CSP would refuse an inline style or script: there must be none
    page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
    await page.goto(f"{app_server.url}/history")
    await page.get_by_test_id("analytics-link").click()
    await expect(page).to_have_url(f"{app_server.url}/history/analytics")
    await expect(page.get_by_role("heading", name="Analytics")).to_be_visible()
    charts = page.locator("svg[role=img]")
    await expect(charts).to_have_count(7)
    for title in ("Conversations per day", "Busiest hours", "Most frequent topics", "How long conversations last"):
        chart = page.get_by_role("img", name=title)
        await expect(chart).to_be_visible()
        await expect(chart.locator("> title")).to_have_text(title)
        assert (await chart.bounding_box() or {"width": 0})["width"] > 300
    await expect(page.get_by_test_id("chart-topics").locator("text.chart-row-label").first).to_have_text("cooking")

    hours = page.get_by_test_id("chart-hours")
    await hours.get_by_text("Show the numbers").click()
    await expect(hours.get_by_test_id("chart-hours-table")).to_be_visible()
    await page.screenshot(path=screenshots / "analytics-desktop.png", full_page=True)
    await page.set_viewport_size({"width": 390, "height": 844})
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways on a phone ({width} px)"
    await page.screenshot(path=screenshots / "analytics-phone.png", full_page=True)
    await page.emulate_media(color_scheme="dark")
    await page.screenshot(path=screenshots / "analytics-phone-dark.png", full_page=True)

    shown = {
        row[0]: int(row[1])
        for row in await hours.locator("tbody tr").evaluate_all(
            "rows => rows.map(r => [r.cells[0].textContent, r.cells[1].textContent])"
        )
    }
    async with connection() as conn:
        saved = await conn.fetch(
            "SELECT started_at FROM chat_session WHERE owner = $1 AND ended_at IS NOT NULL", user.id
        )
    local_hours = [r["started_at"].astimezone(ZoneInfo(ZONE)).hour for r in saved]
    assert shown == {f"{h:02d}:00\u2013{(h + 1) % 24:02d}:00": local_hours.count(h) for h in range(24)}
    await expect(page.get_by_test_id("total-conversations")).to_have_text(str(len(saved)))
    assert refused == []

    audit = await new_context(bypass_csp=True, extra_http_headers={"X-Forwarded-For": client_ip()})  # for axe
    await audit.add_cookies(await context.cookies())
    audited = await audit.new_page()
    await audited.goto(f"{app_server.url}/history/analytics")
    assert await axe_violations(audited) == []
