"""Agent replies as Markdown with hostile payloads in agent and user text (live, history, share page), and the
Stop button (click and Esc) cutting a slow model's reply, in Chromium."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import BrowserContext, Page, expect

from chatapp.conversations.agent_access import ingest_token
from chatapp.core.database import connection
from tests.e2e.pages import ChatPage
from tests.fakes.openai_chat import FakeOpenAI, Reply, fake_openai
from tests.support import SECRET_KEY, AppServer

PAYLOADS = (
    "<script>window.__pwned = 'script'</script>\n\n"
    "<img src=x onerror=\"window.__pwned = 'img'; alert('img')\">\n\n"
    '<a href="javascript:alert(1)">raw link</a> <iframe src="javascript:alert(2)"></iframe>\n\n'
    "[md link](javascript:alert('md')) [data](data:text/html,<script>alert(3)</script>)\n\n"
    "<div onmouseover=\"alert('div')\">raw html</div>"
)
MARKDOWN = (
    "Here is **your plan** for _Lisbon_:\n\n"
    "1. Day one: Alfama\n2. Day two: Belém\n\n"
    "| Day | Cost |\n|:--|--:|\n| 1 | 40 € |\n\n"
    "See [the guide](https://example.com/lisbon) and `pastel de nata`.\n\n"
    "```\nprint('<b>hi</b>')\n```\n\n" + PAYLOADS
)
LONG = " ".join(f"word{i}" for i in range(400))
INERT_CHECK = """(root) => ({
  scripts: root.querySelectorAll('script').length,
  images: root.querySelectorAll('img, iframe, svg').length,
  handlers: [...root.querySelectorAll('*')].flatMap(e => [...e.attributes].map(a => a.name))
    .filter(n => n.startsWith('on')).length,
  badLinks: [...root.querySelectorAll('a[href]')].filter(a => !/^https?:|^mailto:|^\\//.test(a.getAttribute('href'))
    && !a.closest('.sidebar, nav, header')).length,
  pwned: window.__pwned || null,
})"""


async def watch_for_attacks(page: Page) -> list[str]:
    """Every dialog that opens (alert, confirm) is recorded and dismissed."""
    dialogs: list[str] = []

    async def on_dialog(dialog: object) -> None:
        dialogs.append(dialog.message)  # type: ignore[attr-defined]
        await dialog.dismiss()  # type: ignore[attr-defined]

    page.on("dialog", on_dialog)
    return dialogs


async def assert_inert(page: Page, selector: str, dialogs: list[str]) -> None:
    found = await page.locator(selector).evaluate(INERT_CHECK)
    assert found == {"scripts": 0, "images": 0, "handlers": 0, "badLinks": 0, "pwned": None}
    assert dialogs == []


async def ingest(base_url: str, cid: str, events: list[dict[str, object]]) -> None:
    token = ingest_token(SECRET_KEY, uuid.UUID(cid))
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        response = await http.post(
            f"/api/conversations/{cid}/events", json={"events": events}, headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 200, response.text


async def test_agent_markdown_renders_and_payloads_stay_inert_live_in_history_and_shared(
    context: BrowserContext, app_server: AppServer, screenshots: Path
) -> None:
    chat = ChatPage(await context.new_page(), app_server.url)
    dialogs = await watch_for_attacks(chat.page)
    await chat.signup()
    await chat.wait_for_agent_reply(1)
    cid = await chat.conversation_id()

    # The user's own text with the same payloads: shown as typed, as text.
    await chat.send("Plain me: " + PAYLOADS.replace("\n\n", " "))
    await expect(chat.finals("user")).to_have_count(1)
    await expect(chat.finals("user").first).to_contain_text("<script>window.__pwned = 'script'</script>")
    await chat.wait_for_agent_reply(2)

    # An interim that stops inside an open code fence, then the final, both from the agent.
    item = f"md-{uuid.uuid4().hex}"
    await ingest(
        app_server.url, cid, [{"item_id": item, "role": "agent", "text": "Steps:\n```\nrm -rf", "final": False}]
    )
    interim = chat.page.locator('#messages-container .message[data-final="false"] .bubble pre code')
    await expect(interim).to_have_text("rm -rf")
    await expect(chat.page.locator("#message-input")).to_be_editable()  # the page around it is intact
    await ingest(app_server.url, cid, [{"item_id": item, "role": "agent", "text": MARKDOWN, "final": True}])
    reply = chat.finals("agent").nth(2).locator(".bubble")
    await expect(reply.locator("strong")).to_have_text("your plan")
    await expect(reply.locator("ol li")).to_have_count(2)
    await expect(reply.locator("table td.align-right")).to_have_text("40 €")
    await expect(reply.locator("pre code")).to_have_text("print('<b>hi</b>')")
    link = reply.get_by_role("link", name="the guide")
    assert await link.get_attribute("target") == "_blank"
    assert await link.get_attribute("rel") == "nofollow noopener noreferrer"
    await expect(reply).to_contain_text("[md link](javascript:alert('md'))")  # shown as text, not a link
    await reply.hover()
    await chat.page.locator("#messages-container").hover()
    await assert_inert(chat.page, "#messages-container", dialogs)
    await chat.page.screenshot(path=screenshots / "markdown-live.png", full_page=True)

    # Saved: the history page and a share link render it the same way, just as inert.
    await chat.page.locator("#new-chat-button").click()
    await expect(chat.page.locator("#chat-panel")).not_to_have_attribute("data-conversation-id", cid)
    await chat.page.goto(f"{app_server.url}/history/{cid}")
    agent_text = chat.page.locator(".transcript-agent .transcript-text").nth(2)
    await expect(agent_text.locator("table")).to_have_count(1)
    await expect(agent_text.locator("strong")).to_have_text("your plan")
    await expect(chat.page.locator(".transcript-user .transcript-text").first).to_contain_text("<img src=x")
    await assert_inert(chat.page, ".transcript", dialogs)
    await chat.page.get_by_test_id("share-create").click()
    url = await chat.page.get_by_test_id("share-url").input_value()
    shared = await context.new_page()
    shared_dialogs = await watch_for_attacks(shared)
    await shared.goto(url)
    await expect(shared.locator(".transcript-agent .transcript-text table")).to_have_count(1)
    await assert_inert(shared, ".transcript", shared_dialogs)
    await shared.screenshot(path=screenshots / "markdown-shared.png", full_page=True)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def slow_model() -> AsyncIterator[FakeOpenAI]:
    async with fake_openai() as fake:
        yield fake


@pytest.fixture(scope="module")
def slow_server(db: str, slow_model: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    """An app whose model streams long replies slowly, so there is time to press Stop."""
    env = {"CHATAPP_LLM_BASE_URL": slow_model.base_url, "CHATAPP_LLM_MODEL": "fake", "CHATAPP_LLM_API_KEY": "sk-t"}
    server = AppServer.start(db, Path(tmp_path_factory.mktemp("slow")), ready_timeout=60, **env)
    yield server
    server.stop()


async def agent_rows(cid: str) -> list[tuple[str, bool]]:
    async with connection() as conn:
        rows = await conn.fetch(
            "SELECT text, interrupted FROM utterance WHERE session = $1 AND role = 'agent' ORDER BY seq",
            uuid.UUID(cid),
        )
    return [(r["text"], r["interrupted"]) for r in rows]


async def test_stop_button_and_esc_cut_the_reply_and_keep_it_as_interrupted(
    context: BrowserContext, slow_server: AppServer, slow_model: FakeOpenAI, screenshots: Path
) -> None:
    slow = Reply(LONG, pieces=400, piece_delay=0.03)  # 12 s in full
    slow_model.script[:] = [Reply("Hello! Where to?"), slow, Reply("Short **answer**."), slow]
    chat = ChatPage(await context.new_page(), slow_server.url)
    await chat.signup()
    await chat.wait_for_agent_reply(1)
    stop = chat.page.get_by_test_id("stop-button")
    await expect(stop).to_be_hidden()  # idle: nothing to stop
    cid = await chat.conversation_id()

    await chat.send("Tell me everything about Lisbon")
    await expect(stop).to_be_visible()
    streaming = chat.page.locator('#messages-container .message[data-role="agent"][data-final="false"]')
    await expect(streaming).to_contain_text("word5")
    await chat.page.screenshot(path=screenshots / "stop-while-streaming.png")
    await stop.click()
    cut = chat.finals("agent").nth(1)
    await expect(cut.locator(".message-flag")).to_have_text("interrupted", timeout=5_000)
    await expect(stop).to_be_hidden()
    await chat.page.screenshot(path=screenshots / "stop-interrupted.png")
    [_, (text, interrupted)] = await agent_rows(cid)
    assert interrupted
    assert LONG.startswith(text)
    assert len(text) < len(LONG) / 2
    await expect(cut).to_contain_text(text.split()[-1])

    # The agent carries on; then Esc in the composer stops the next long reply the same way.
    await chat.send("Briefly?")
    await chat.wait_for_agent_reply(3)
    await expect(chat.finals("agent").nth(2).locator("strong")).to_have_text("answer")
    await chat.send("Everything again")
    await expect(streaming).to_contain_text("word5")
    await chat.page.locator("#message-input").press("Escape")
    await expect(chat.finals("agent").nth(3).locator(".message-flag")).to_have_text("interrupted", timeout=5_000)
    rows = await agent_rows(cid)
    assert [r[1] for r in rows] == [False, True, False, True]
