"""One app host cut off (`ip link set … down`) in the middle of a conversation in Chromium, with the person's
live stream and the conversation's agent both on it: the proxy sends the next message to the other host, the
page notices its silent stream (missed pings) and reconnects to the other host, replaying from its cursor, the
other host takes the agent over once its lease expires and answers, and nothing acknowledged is lost. When the
cut host is back it writes nothing more for the conversation (fenced)."""

from __future__ import annotations

import asyncio
import re
import time
import uuid

import httpx
import pytest
from playwright.async_api import Browser, Page, Playwright, expect

from tests.e2e.pages import ChatPage
from tests.support import wait_for
from tests.support_browser import CHROMIUM, CHROMIUM_ARGS
from tests.support_hosts import AppHost, Deployment, figure

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPLAY_WITHIN = 10.0  # the target: a cut host's streams are back on the other host within 10 s

# The page records when its stream (re)opens, in its own clock.
RECORD_OPENS = """
window.__sseOpens = [];
document.addEventListener("htmx:sseOpen", function () { window.__sseOpens.push(Date.now()); });
"""


def gauge(app: AppHost, name: str) -> float:
    """One of the host's gauges from its /metrics (on the private network; summed over its processes)."""
    text = httpx.get(f"{app.url}/metrics", timeout=5).text
    return sum(float(value) for value in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE))


def gauges(deployment: Deployment, name: str) -> dict[str, float]:
    return {host: gauge(app, name) for host, app in deployment.apps.items()}


def grown(before: dict[str, float], after: dict[str, float]) -> list[str]:
    return [host for host in after if after[host] > before[host]]


async def test_a_host_cut_off_mid_conversation_fails_over_replays_and_is_taken_over_losing_nothing(
    deployment: Deployment, playwright: Playwright
) -> None:
    browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    try:
        await cut_mid_conversation(deployment, browser)
    finally:
        await browser.close()


async def cut_mid_conversation(deployment: Deployment, browser: Browser) -> None:
    context = await browser.new_context(ignore_https_errors=True)
    page = await context.new_page()
    await page.add_init_script(RECORD_OPENS)
    chat = ChatPage(page, deployment.url)
    agents_before = gauges(deployment, "chatapp_active_agents")
    await chat.signup()
    await chat.wait_for_agent_reply(1)
    cid = uuid.UUID(await chat.conversation_id())
    (agent_host,) = grown(agents_before, gauges(deployment, "chatapp_active_agents"))

    # The stream on the agent's host too (round robin: reload until it lands there).
    for _ in range(8):
        await page.reload()
        await expect(chat.panel).to_be_visible()
        await wait_for(lambda: stream_opened(page, 0), 15)
        if await stream_host(deployment) == agent_host:
            break
        await context.request.get(f"{deployment.url}/healthz")  # shift the round robin by one
    else:
        pytest.fail("the stream never landed on the agent's host")
    await chat.send("Plan a weekend in Lisbon")
    await chat.wait_for_agent_reply(2)
    (holder,) = [
        row["holder"] for row in await deployment.fetch("SELECT holder FROM agent_lease WHERE conversation = $1", cid)
    ]

    cut = deployment.apps[agent_host]
    cut_at = time.monotonic()
    cut_at_page = await page.evaluate("Date.now()")
    deployment.cut(agent_host)
    try:
        async with page.expect_response(lambda r: r.url.endswith("/messages") and r.request.method == "POST") as sent:
            await chat.send("And then Porto?")
        assert (await sent.value).ok
        failover = time.monotonic() - cut_at

        async def taken_over() -> bool:
            rows = await deployment.fetch("SELECT holder FROM agent_lease WHERE conversation = $1", cid)
            return bool(rows) and rows[0]["holder"] != holder

        await wait_for(taken_over, 20)
        takeover = time.monotonic() - cut_at
        await wait_for(lambda: stream_opened(page, cut_at_page), 20)
        reopened = (min(t for t in await page.evaluate("window.__sseOpens") if t > cut_at_page) - cut_at_page) / 1000
        await chat.wait_for_agent_reply(3)  # the other host's agent answered Porto; the page got it live
        answered = time.monotonic() - cut_at
        await chat.send("And Faro after that?")
        await chat.wait_for_agent_reply(4)
    finally:
        deployment.reconnect(agent_host)
    cut_for = time.monotonic() - cut_at
    await wait_for(lambda: _healthy(cut), 20)
    await page.wait_for_timeout(4000)  # what the cut host held would be written by now

    rows = await deployment.fetch("SELECT role, text FROM utterance WHERE session = $1 ORDER BY seq", cid)
    said = [row["text"] for row in rows if row["role"] == "user"]
    replies = [row["text"] for row in rows if row["role"] == "agent"]
    assert said == ["Plan a weekend in Lisbon", "And then Porto?", "And Faro after that?"]
    assert len(replies) == 4, replies  # the greeting and one answer each: none lost, none twice
    await expect(chat.finals("agent")).to_have_count(4)
    await expect(chat.finals("user")).to_have_count(3)
    log = cut.service.log.read_text()
    assert "not renewed in time: held" in log  # it stopped speaking for the conversation before the takeover
    assert reopened < REPLAY_WITHIN
    ping = deployment.settings["CHATAPP_SSE_PING_SECONDS"]
    figure(
        f"app host cut off mid-conversation (Chromium through nginx, ping {ping} s): "
        f"next message acknowledged via the other host after {failover:.1f} s, agent taken over after "
        f"{takeover:.1f} s, stream reconnected (replaying from its cursor) after {reopened:.1f} s, answer on the page "
        f"after {answered:.1f} s; 3/3 messages stored and answered once; cut for {cut_for:.1f} s, nothing written by "
        "the cut host after it was back"
    )


async def stream_host(deployment: Deployment) -> str | None:
    """The one host with an open stream (the page's: no other test holds one), once the reload's old stream closed."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        hosts = [host for host, count in gauges(deployment, "chatapp_sse_streams").items() if count >= 1]
        if len(hosts) == 1:
            return hosts[0]
        await asyncio.sleep(0.1)
    return None


async def stream_opened(page: Page, since: float) -> bool:
    return any(t > since for t in await page.evaluate("window.__sseOpens"))


async def _healthy(app: AppHost) -> bool:
    return app.healthy()
