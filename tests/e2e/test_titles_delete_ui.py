"""In the browser: Delete asks in an in-app dialog (keyboard only, never the browser's confirm()), a toast can undo
it, and a title the model writes appears live in another tab."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import BrowserContext, Dialog, expect

from chatapp.core.database import connection
from tests.e2e.pages import ChatPage, signed_up_with_history
from tests.fakes.openai_chat import TITLE_INSTRUCTIONS, FakeOpenAI, Reply, fake_openai
from tests.support import READY, AppServer


async def deleted_at(cid: str) -> object:
    async with connection() as conn:
        return await conn.fetchval("SELECT deleted_at FROM chat_session WHERE id = $1", uuid.UUID(cid))


async def test_delete_asks_in_an_in_app_dialog_by_keyboard_and_undo_brings_the_row_back(
    context: BrowserContext, app_server: AppServer, screenshots: Path
) -> None:
    chat, ids = await signed_up_with_history(context, app_server, 2)
    page = chat.page
    browser_dialogs: list[str] = []

    async def refuse(dialog: Dialog) -> None:
        browser_dialogs.append(dialog.type)
        await dialog.dismiss()

    page.on("dialog", refuse)
    await page.goto(f"{app_server.url}/history")
    rows = page.get_by_test_id("history-item")
    await expect(rows).to_have_count(2)
    row = page.locator(f'[data-testid=history-item][data-conversation-id="{ids[0]}"]')
    delete = row.get_by_test_id("delete-button")
    dialog = page.get_by_test_id("delete-dialog")

    # Open with the keyboard; Cancel has the focus; Tab goes round the two buttons; Escape closes and gives the
    # focus back to the row's Delete button; nothing was deleted.
    await delete.focus()
    await page.keyboard.press("Enter")
    await expect(dialog).to_be_visible()
    await expect(dialog).to_contain_text("Delete “Trip 00”?")
    await expect(page.get_by_test_id("delete-cancel")).to_be_focused()
    await page.keyboard.press("Tab")
    await expect(page.get_by_test_id("delete-confirm")).to_be_focused()
    await page.keyboard.press("Tab")
    await expect(page.get_by_test_id("delete-cancel")).to_be_focused()
    await page.keyboard.press("Shift+Tab")
    await expect(page.get_by_test_id("delete-confirm")).to_be_focused()
    await page.screenshot(path=screenshots / "delete-dialog.png")
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    await expect(delete).to_be_focused()
    assert await deleted_at(ids[0]) is None

    # Again, and Delete: the row goes, a toast offers Undo, and Undo brings the row back.
    await page.keyboard.press("Enter")
    await expect(dialog).to_be_visible()
    await page.keyboard.press("Tab")
    await page.keyboard.press("Enter")
    await expect(dialog).to_be_hidden()
    await expect(rows).to_have_count(1)
    undo = page.get_by_test_id("toast-undo")
    await expect(undo).to_be_visible()
    await expect(page.get_by_test_id("toast")).to_contain_text("Deleted “Trip 00”.")
    await page.screenshot(path=screenshots / "delete-undo-toast.png")
    assert await deleted_at(ids[0]) is not None
    await undo.click()
    await expect(rows).to_have_count(2)
    await expect(row).to_be_visible()
    await expect(page.get_by_test_id("toast")).to_contain_text("Restored.")
    assert await deleted_at(ids[0]) is None
    assert browser_dialogs == []  # never the browser's confirm()


async def test_delete_from_a_conversations_page_lands_on_the_list_with_undo(
    context: BrowserContext, app_server: AppServer
) -> None:
    chat, ids = await signed_up_with_history(context, app_server, 2)
    page = chat.page
    await page.goto(f"{app_server.url}/history/{ids[1]}")
    await page.get_by_test_id("delete").click()
    await expect(page.get_by_test_id("delete-dialog")).to_be_visible()
    await page.get_by_test_id("delete-confirm").click()
    await expect(page).to_have_url(f"{app_server.url}/history")  # the notice became the toast; a reload shows none
    await expect(page.get_by_test_id("history-item")).to_have_count(1)
    await expect(page.get_by_test_id("deleted-notice")).to_be_hidden()
    await page.get_by_test_id("toast-undo").click()
    await expect(page.get_by_test_id("history-item")).to_have_count(2)
    assert await deleted_at(ids[1]) is None


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def model() -> AsyncIterator[FakeOpenAI]:
    async with fake_openai() as fake:
        yield fake


@pytest.fixture(scope="module")
def model_server(db: str, model: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    env = {"CHATAPP_LLM_BASE_URL": model.base_url, "CHATAPP_LLM_MODEL": "fake", "CHATAPP_LLM_API_KEY": "sk-t"}
    server = AppServer.start(db, Path(tmp_path_factory.mktemp("titled")), ready_timeout=READY, **env)
    yield server
    server.stop()


async def test_a_title_from_the_model_appears_live_in_a_second_tab(
    context: BrowserContext, model_server: AppServer, model: FakeOpenAI, screenshots: Path
) -> None:
    model.script[:] = [Reply("Hello! Where to?"), Reply("Lisbon is lovely in spring.")]
    # time to see the first message name it first
    model.scripts_by_system[TITLE_INSTRUCTIONS] = [Reply("Spring in Lisbon", first_token_delay=3.0)]
    first = ChatPage(await context.new_page(), model_server.url)
    await first.signup()
    await first.wait_for_agent_reply(1)
    second = ChatPage(await context.new_page(), model_server.url)
    await second.page.goto(model_server.url)
    await second.wait_for_agent_reply(1)
    title = second.page.get_by_test_id("chat-title")
    await expect(title).to_have_text("New Conversation")

    await first.send("Plan three days in Lisbon")
    await second.wait_for_agent_reply(2)
    await expect(title).to_have_text("Plan three days in Lisbon")  # the first message names it at once...
    await expect(title).to_have_text("Spring in Lisbon", timeout=10_000)  # ...until the model's title arrives
    await expect(first.page.get_by_test_id("chat-title")).to_have_text("Spring in Lisbon")
    await second.page.screenshot(path=screenshots / "model-title-second-tab.png")

    # Saved by New Chat in the first tab: both sidebars list it under the model's title.
    await first.page.locator("#new-chat-button").click()
    for tab in (first, second):
        await expect(tab.page.locator("#history-list [data-testid=history-item]").first).to_have_text(
            "Spring in Lisbon"
        )
