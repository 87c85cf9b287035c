"""Import and the account page in the browser: upload a file, change name and password, download my data,
delete the account with its confirmation; each ends by checking the database."""

from __future__ import annotations

import json
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest_asyncio
from playwright.async_api import BrowserContext, Page, expect

from chatapp.core.database import connection
from tests.e2e.pages import ChatPage, axe_violations
from tests.factories import chatgpt_conversation
from tests.support import PASSWORD, AppServer, client_ip

NEW_PASSWORD = "a much longer new passphrase"


@pytest_asyncio.fixture(loop_scope="session")
async def context(new_context: Any) -> BrowserContext:
    """Own address per test; CSP bypassed so axe-core can be injected (see test_ux_polish_ui)."""
    made: BrowserContext = await new_context(bypass_csp=True, extra_http_headers={"X-Forwarded-For": client_ip()})
    return made


async def user_id_of(email: str) -> object:
    async with connection() as conn:
        return await conn.fetchval("SELECT id FROM user_account WHERE email = $1", email)


async def shoot(page: Page, screenshots: Path, name: str) -> None:
    await page.set_viewport_size({"width": 1280, "height": 900})
    await page.screenshot(path=screenshots / f"{name}-desktop.png", full_page=True)
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.screenshot(path=screenshots / f"{name}-phone.png", full_page=True)
    await page.set_viewport_size({"width": 1280, "height": 900})


async def test_import_a_chatgpt_file_from_the_history_page(
    context: BrowserContext, app_server: AppServer, screenshots: Path, tmp_path: Path
) -> None:
    chat = ChatPage(await context.new_page(), app_server.url)
    email = await chat.signup()
    page = chat.page
    upload = tmp_path / "conversations.json"
    upload.write_text(json.dumps([chatgpt_conversation("ui-1", "Packing for Iceland")]))

    await page.goto(f"{app_server.url}/history")
    await page.get_by_role("link", name="Import").click()
    await expect(page.get_by_role("heading", name="Import conversations")).to_be_visible()
    await page.get_by_label("File to import").set_input_files(upload)
    await page.get_by_role("button", name="Import", exact=True).click()
    await expect(page.get_by_test_id("import-result")).to_have_text("Imported 1 conversation.")
    assert [v["id"] for v in await axe_violations(page)] == []
    await shoot(page, screenshots, "import")

    await page.get_by_label("File to import").set_input_files(upload)
    await page.get_by_role("button", name="Import", exact=True).click()
    await expect(page.get_by_test_id("import-result")).to_have_text("Imported 0 conversations (1 already there).")

    bad = tmp_path / "notes.json"
    bad.write_text('{"hello": "world"}')
    await page.get_by_label("File to import").set_input_files(bad)
    await page.get_by_role("button", name="Import", exact=True).click()
    await expect(page.get_by_test_id("import-error")).to_contain_text("Nothing was imported.")
    await shoot(page, screenshots, "import-error")

    await page.get_by_role("link", name="Back to history").click()
    await expect(page.get_by_test_id("history-item")).to_have_count(1)
    await expect(page.get_by_test_id("history-item")).to_contain_text("Packing for Iceland")
    async with connection() as conn:
        rows = await conn.fetch(
            "SELECT title, started_at, import_source FROM chat_session WHERE owner = $1 AND ended_at IS NOT NULL",
            await user_id_of(email),
        )
    assert [(r["title"], r["started_at"], r["import_source"]) for r in rows] == [
        ("Packing for Iceland", datetime.fromtimestamp(1_700_000_000, tz=UTC), "chatgpt:ui-1")
    ]


async def test_account_page_name_password_download_and_delete(
    context: BrowserContext, app_server: AppServer, screenshots: Path
) -> None:
    chat = ChatPage(await context.new_page(), app_server.url)
    email = await chat.signup("Ada Traveller")
    page = chat.page
    user_id = await user_id_of(email)
    await chat.send("Plan a weekend in Porto")
    await expect(chat.finals("user")).to_have_count(1)
    first = await chat.conversation_id()
    await page.get_by_role("button", name="New chat").click()
    await expect(chat.panel).not_to_have_attribute("data-conversation-id", first)

    await page.get_by_test_id("user-name").click()
    await expect(page.get_by_role("heading", name="Account", exact=True)).to_be_visible()
    assert [v["id"] for v in await axe_violations(page)] == []
    await shoot(page, screenshots, "account")

    await page.get_by_role("textbox", name="Display name").fill("Ada Lovelace")
    await page.get_by_role("button", name="Save name").click()
    await expect(page.get_by_test_id("account-notice")).to_have_text("Your name was changed.")
    await expect(page.get_by_test_id("user-name")).to_have_text("Ada Lovelace")

    await page.get_by_label("Current password").fill("wrong password here")
    await page.get_by_label("New password").fill(NEW_PASSWORD)
    await page.get_by_role("button", name="Change password").click()
    await expect(page.locator("#current_password-error")).to_contain_text("not your current password")
    await page.get_by_label("Current password").fill(PASSWORD)
    await page.get_by_label("New password").fill(NEW_PASSWORD)
    await page.get_by_role("button", name="Change password").click()
    await expect(page.get_by_test_id("account-notice")).to_contain_text("Your password was changed.")

    async with page.expect_download() as download_info:
        await page.get_by_test_id("download-data").click()
    download = await download_info.value
    assert download.suggested_filename.startswith("chatapp-export-")
    with zipfile.ZipFile(await download.path()) as archive:
        [name] = archive.namelist()
        document = json.loads(archive.read(name))
    assert document["format"] == "chatapp.conversation"
    # The offline model's greeting may be stored before or after the message typed at once after sign-up.
    assert [u["text"] for u in document["utterances"] if u["role"] == "user"] == ["Plan a weekend in Porto"]

    await page.get_by_text("Delete my account…").click()
    await page.get_by_label("Type your email address to confirm").fill("not-me@example.com")
    await page.get_by_test_id("confirm-delete").click()
    await expect(page.locator("#confirm-error")).to_contain_text("to confirm")
    await shoot(page, screenshots, "account-delete")
    await page.get_by_label("Type your email address to confirm").fill(email)
    await page.get_by_test_id("confirm-delete").click()
    await expect(page.get_by_test_id("account-deleted")).to_contain_text("You are logged out")
    await shoot(page, screenshots, "account-deleted")
    await page.goto(f"{app_server.url}/")
    await expect(page).to_have_url(f"{app_server.url}/login?next=%2F")

    async with connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM user_account WHERE id = $1", user_id) == 0
        assert await conn.fetchval("SELECT count(*) FROM chat_session WHERE owner = $1", user_id) == 0
        sessions = await conn.fetchval(
            "SELECT count(*) FROM http_session WHERE starts_with(key, $1)",
            f"session:{user_id.hex}.",  # type: ignore[attr-defined]
        )
    assert sessions == 0
