"""A person signs up, lands on the chat page with their name shown, and logs out."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Page, expect

from chatapp.core.database import connection
from tests.support import PASSWORD, AppServer, unique_email


async def test_signup_chat_page_logout(page: Page, app_server: AppServer, screenshots: Path) -> None:
    email = unique_email()
    await page.goto(f"{app_server.url}/")
    await expect(page).to_have_url(f"{app_server.url}/login?next=%2F")
    await page.get_by_role("link", name="Create an account").click()
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Display name").fill("Marco Polo")
    await page.get_by_label("Password").fill("short")
    await page.get_by_role("button", name="Sign up").click()
    await expect(page.locator("#password-error")).to_contain_text("at least 10 characters")
    await page.screenshot(path=screenshots / "signup-error.png", full_page=True)

    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign up").click()
    await expect(page).to_have_url(f"{app_server.url}/")
    await expect(page.get_by_test_id("user-name")).to_have_text("Marco Polo")
    await expect(page.locator("#chat-panel")).to_be_visible()
    await page.screenshot(path=screenshots / "chat-desktop.png", full_page=True)

    await page.set_viewport_size({"width": 390, "height": 844})
    await expect(page.get_by_test_id("user-name")).to_be_visible()
    await page.screenshot(path=screenshots / "chat-phone.png", full_page=True)

    await page.get_by_test_id("logout").click()
    await expect(page).to_have_url(f"{app_server.url}/login")
    await page.goto(f"{app_server.url}/")
    await expect(page).to_have_url(f"{app_server.url}/login?next=%2F")
    async with connection() as conn:
        assert await conn.fetchval("SELECT display_name FROM user_account WHERE email = $1", email) == "Marco Polo"
