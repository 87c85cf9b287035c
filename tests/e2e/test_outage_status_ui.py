"""While the server cannot be reached the status line says so, instead of "Agent is ready", and it comes back by
itself; a refused dictation post says why."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import BrowserContext, Route, expect

from tests.e2e.pages import ChatPage
from tests.support import AppServer


async def test_status_says_unreachable_while_the_stream_is_down_and_recovers(
    context: BrowserContext, app_server: AppServer, screenshots: Path
) -> None:
    chat = ChatPage(await context.new_page(), app_server.url)
    await chat.signup()
    await chat.wait_for_agent_reply(1)
    status = chat.page.get_by_test_id("agent-status")
    await expect(status).to_have_attribute("data-state", "idle")

    async def refuse(route: Route) -> None:
        await route.abort()

    # The server "goes away": reconnects fail, and the open stream is dropped.
    await context.route("**/conversations/*/stream*", refuse)
    await chat.page.request.post(f"{app_server.url}/_test/drop-streams")
    await expect(status).to_have_attribute("data-state", "unreachable")
    await expect(status).to_contain_text("Agent unreachable")
    await expect(chat.page.locator("#connection-state")).to_be_visible()
    await chat.page.screenshot(path=screenshots / "chat-agent-unreachable.png")

    await context.unroute("**/conversations/*/stream*", refuse)
    await expect(status).to_have_attribute("data-state", "idle", timeout=15_000)
    await expect(status).to_have_text("Agent is ready")
    await expect(chat.page.locator("#connection-state")).to_be_hidden()


async def test_a_503_marks_the_agent_unreachable_until_a_request_succeeds(
    context: BrowserContext, app_server: AppServer
) -> None:
    chat = ChatPage(await context.new_page(), app_server.url)
    await chat.signup()
    await chat.wait_for_agent_reply(1)
    status = chat.page.get_by_test_id("agent-status")

    async def outage(route: Route) -> None:
        await route.fulfill(
            status=503,
            headers={"HX-Trigger": '{"toast": {"message": "The database is unavailable.", "level": "error"}}'},
            body="The database is unavailable right now.",
        )

    await chat.page.route("**/conversations/*/messages", outage)
    await chat.page.locator("#message-input").fill("Is anyone there?")
    await chat.page.locator("#message-input").press("Enter")
    await expect(status).to_have_attribute("data-state", "unreachable")
    await expect(chat.page.get_by_test_id("toast").last).to_contain_text("The database is unavailable.")

    await chat.page.unroute("**/conversations/*/messages", outage)
    await chat.page.locator("#message-input").press("Enter")  # the draft is still there: send it again
    await expect(chat.finals("user")).to_have_count(1)
    await expect(status).not_to_have_attribute("data-state", "unreachable")


async def test_a_refused_dictation_post_says_why(context: BrowserContext, app_server: AppServer) -> None:
    await context.add_init_script(
        """(() => {
          class FakeRecognition {
            start() { window.__recognition = this; }
            stop() { if (this.onend) this.onend(); }
          }
          window.SpeechRecognition = FakeRecognition;
          window.__hear = (text, isFinal) => {
            const result = [{transcript: text}]; result.isFinal = isFinal;
            window.__recognition.onresult({resultIndex: 0, results: [result]});
          };
        })();"""
    )
    chat = ChatPage(await context.new_page(), app_server.url)
    await chat.signup()

    async def too_many(route: Route) -> None:
        await route.fulfill(
            status=429,
            headers={"Content-Type": "application/json", "Retry-After": "42"},
            body='{"detail": "Too many attempts. Try again in 42 seconds.", "status_code": 429}',
        )

    await chat.page.route("**/conversations/*/dictation", too_many)
    await chat.page.locator("#dictate-button").click()
    await chat.page.evaluate("window.__hear('Lisbon in May', true)")
    await expect(chat.page.get_by_test_id("toast").last).to_contain_text("Try again in 42 seconds")
    await expect(chat.finals("user")).to_have_count(0)
