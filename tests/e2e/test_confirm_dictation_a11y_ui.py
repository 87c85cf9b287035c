"""In the browser: Delete asks first, stubbed browser dictation, the live region's content, Meta+Shift+O."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from playwright.async_api import BrowserContext, Dialog, expect

from chatapp.conversations import queries
from chatapp.core.database import connection
from tests.e2e.pages import ChatPage, signed_up_with_history
from tests.support import AppServer

# A stand-in for the Web Speech API: the test drives it as the browser's recogniser would.
SPEECH_STUB = """
window.SpeechRecognition = class {
  constructor() { this.started = false; window.__recognition = this; }
  start() { this.started = true; }
  stop() { this.started = false; if (this.onend) this.onend(); }
};
window.__hear = (text, isFinal) => {
  const result = [{ transcript: text, confidence: 0.9 }];
  result.isFinal = isFinal;
  window.__recognition.onresult({ resultIndex: 0, results: [result] });
};
"""


async def deleted(conversation_id: str) -> bool:
    async with connection() as conn:
        return bool(
            await conn.fetchval("SELECT deleted_at IS NOT NULL FROM chat_session WHERE id = $1::uuid", conversation_id)
        )


async def test_delete_asks_for_confirmation_cancel_keeps_and_ok_deletes(
    context: BrowserContext, app_server: AppServer
) -> None:
    chat, [cid] = await signed_up_with_history(context, app_server, 1)
    page = chat.page
    await page.goto(f"{app_server.url}/history/{cid}")
    browser_dialogs: list[str] = []

    async def refuse(dialog: Dialog) -> None:
        browser_dialogs.append(dialog.type)
        await dialog.dismiss()

    page.on("dialog", refuse)
    await page.get_by_test_id("delete").click()
    dialog = page.get_by_test_id("delete-dialog")
    await expect(dialog).to_be_visible()
    await expect(dialog).to_contain_text("You can undo this")
    await page.get_by_test_id("delete-cancel").click()
    await expect(dialog).to_be_hidden()
    await expect(page.get_by_test_id("conversation-title")).to_be_visible()
    await expect(page).to_have_url(f"{app_server.url}/history/{cid}")
    assert not await deleted(cid)  # Cancel deleted nothing

    await page.get_by_test_id("delete").click()
    await page.get_by_test_id("delete-confirm").click()
    await expect(page).to_have_url(f"{app_server.url}/history")
    assert await deleted(cid)
    assert browser_dialogs == []  # the in-app dialog, never the browser's confirm()


async def test_browser_dictation_shows_the_interim_in_place_stores_the_final_and_is_answered(
    context: BrowserContext, app_server: AppServer
) -> None:
    await context.add_init_script(SPEECH_STUB)
    chat = ChatPage(await context.new_page(), app_server.url)
    await chat.signup()
    await chat.wait_for_agent_reply(1)
    button = chat.page.locator("#dictate-button")
    await expect(button).to_be_visible()  # shown because the browser has SpeechRecognition
    await button.click()
    await expect(button).to_have_attribute("aria-pressed", "true")

    await chat.page.evaluate("window.__hear('I want to go to', false)")
    users = chat.messages.and_(chat.page.locator('[data-role="user"]'))
    await expect(users).to_have_count(1)
    await expect(users.first).to_have_attribute("data-final", "false")
    await expect(users.first.locator(".bubble")).to_have_text("I want to go to")
    interim_id = await users.first.get_attribute("id")

    await chat.page.evaluate("window.__hear('I want to go to Rome', true)")
    await expect(chat.finals("user").locator(".bubble")).to_have_text(["I want to go to Rome"])
    await expect(users).to_have_count(1)  # the final took the interim's place
    assert await users.first.get_attribute("id") == interim_id
    await chat.wait_for_agent_reply(2)
    await expect(chat.finals("agent").last).to_contain_text("Rome")

    cid = uuid.UUID(await chat.conversation_id())
    rows = [(u.role, u.text, u.item_id.startswith("dictation-")) for u in await queries.list_utterances(cid)]
    assert rows[1] == ("user", "I want to go to Rome", True)
    assert rows[2][0] == "agent"
    assert len(rows) == 3

    await button.click()
    await expect(button).to_have_attribute("aria-pressed", "false")


async def test_the_live_region_announces_new_agent_finals(context: BrowserContext, app_server: AppServer) -> None:
    chat = ChatPage(await context.new_page(), app_server.url)
    await chat.signup()
    await chat.wait_for_agent_reply(1)
    live = chat.page.locator('#messages-container[aria-live="polite"][aria-relevant~="additions"]')
    await expect(live).to_have_count(1)

    await chat.send("I want to plan a trip to Lisbon")
    await chat.wait_for_agent_reply(2)
    reply = (await chat.finals("agent").last.locator(".bubble").inner_text()).strip()
    assert "Lisbon" in reply
    # What a screen reader reads out of the region: each final with who said it; interims are hidden from it.
    # (Agent replies are Markdown, so the snapshot has "Agent:" then a paragraph: read it as one text.)
    snapshot = await live.aria_snapshot()
    spoken = " ".join(snapshot.replace('- text: "', "").replace('"', "").replace("- paragraph:", "").split())
    assert f"Agent: {reply}" in spoken, snapshot
    assert "You: I want to plan a trip to Lisbon" in spoken, snapshot
    assert await live.locator('[data-final="false"]:not([aria-hidden="true"])').count() == 0


async def test_meta_shift_o_starts_a_new_chat_like_ctrl_shift_o(context: BrowserContext, app_server: AppServer) -> None:
    chat = ChatPage(await context.new_page(), app_server.url)
    await chat.signup()
    await chat.send("Keep this one")
    await expect(chat.finals("user")).to_have_count(1)
    old_id = await chat.conversation_id()

    await chat.page.locator("#message-input").focus()
    await chat.page.keyboard.press("Meta+Shift+O")

    await expect(chat.panel).not_to_have_attribute("data-conversation-id", old_id)
    saved = await queries.get_conversation(uuid.UUID(old_id))
    assert saved is not None
    assert saved.ended_at is not None
    assert saved.ended_at <= datetime.now(UTC)
