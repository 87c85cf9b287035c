"""Voice mode in the browser, with LiveKit settings pointing at the fake LiveKit server (which has no media):
the page loads livekit-client, says clearly that voice is unavailable, and typing keeps working."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from playwright.async_api import BrowserContext, Request, expect

from chatapp.conversations.agent_access import room_name_for
from chatapp.core.database import connection
from tests.e2e.pages import WATCH_VIOLATIONS, ChatPage
from tests.fakes.livekit import API_KEY, API_SECRET, FakeLiveKit
from tests.support import AppServer


@pytest.fixture(scope="module")
def voice_app(db: str, fake: FakeLiveKit, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    server = AppServer.start(
        db,
        Path(tmp_path_factory.mktemp("voice-ui")),
        LIVEKIT_URL=fake.url,
        LIVEKIT_API_KEY=API_KEY,
        LIVEKIT_API_SECRET=API_SECRET,
        CHATAPP_LIVEKIT_TIMEOUT="1",
    )
    yield server
    server.stop()


async def test_voice_unavailable_is_shown_cleanly_and_typing_still_works(
    context: BrowserContext, voice_app: AppServer, fake: FakeLiveKit, screenshots: Path
) -> None:
    await context.add_init_script(WATCH_VIOLATIONS)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    chat = ChatPage(page, voice_app.url)
    await chat.signup()

    # The client library is loaded and the page tried to join the room it was given a token for ...
    # A function, not an expression: Playwright polls an expression with eval(), which the page's CSP forbids.
    await page.wait_for_function("() => typeof window.LivekitClient?.Room === 'function'")
    await expect(chat.panel).to_have_attribute("data-mode", "voice")
    status = page.get_by_test_id("voice-status")
    # ... which fails (the fake has no WebRTC): a clear message, no crash.
    await expect(status).to_have_attribute("data-state", "unavailable", timeout=20_000)
    await expect(status).to_contain_text("Voice unavailable")
    await expect(status).to_contain_text("You can still type")
    assert fake.rtc_attempts >= 1
    await page.screenshot(path=screenshots / "voice-unavailable.png")

    # Typing works: the text goes to the app, is stored and shown.
    await chat.send("Typed while voice is down")
    await expect(chat.finals("user").locator(".bubble")).to_have_text(["Typed while voice is down"])
    cid = uuid.UUID(await chat.conversation_id())
    async with connection() as conn:
        stored = await conn.fetchval("SELECT text FROM utterance WHERE session = $1 AND role = 'user'", cid)
    assert stored == "Typed while voice is down"

    # The microphone button tries again, and fails as cleanly.
    attempts = fake.rtc_attempts
    await page.get_by_test_id("voice-button").click()
    await expect(status).to_have_attribute("data-state", "unavailable", timeout=20_000)
    assert fake.rtc_attempts > attempts

    # New Chat: the old room is deleted, the page takes the new room's token and tries to join it.
    await page.locator("#new-chat-button").click()
    await expect(chat.panel).not_to_have_attribute("data-conversation-id", str(cid))
    new = uuid.UUID(await chat.conversation_id())
    fake.wait_for(lambda: bool(fake.calls_to("DeleteRoom", room_name_for(cid))))
    assert fake.calls_to("CreateDispatch", room_name_for(new))
    await expect(status).to_have_attribute("data-state", "unavailable", timeout=20_000)
    await chat.send("Still typing after New Chat")
    await expect(chat.finals("user").locator(".bubble")).to_have_text(["Still typing after New Chat"])
    assert errors == []
    assert await page.evaluate("window.__cspViolations") == []  # livekit-client reaching LiveKit is allowed


# livekit-client itself cannot reach a media server here. To check the page's own glue (static/voice.js), this
# stand-in replaces the library: rooms "connect" at once with an agent present, and every call is recorded.
STUB_LIVEKIT_CLIENT = """
(function () {
  var log = window.__lk = { connects: [], disconnects: [], texts: [], mic: [] };
  var RoomEvent = { TrackSubscribed: "trackSubscribed", TrackUnsubscribed: "trackUnsubscribed",
    ParticipantConnected: "participantConnected", ParticipantDisconnected: "participantDisconnected",
    ParticipantAttributesChanged: "participantAttributesChanged", AudioPlaybackStatusChanged: "audioPlaybackChanged",
    Disconnected: "disconnected" };
  function Room() {
    var self = this;
    this.handlers = {};
    this.remoteParticipants = new Map();
    this.canPlaybackAudio = true;
    this.localParticipant = {
      sendText: function (text, options) {
        log.texts.push({ text: text, topic: options.topic, room: self.name, attributes: options.attributes });
        return Promise.resolve({});
      },
      setMicrophoneEnabled: function (on) {
        if (window.__lkDenyMic) {
          var error = new Error("Permission denied"); error.name = "NotAllowedError"; return Promise.reject(error);
        }
        log.mic.push(on); return Promise.resolve();
      },
    };
  }
  Room.prototype.on = function (name, fn) { (this.handlers[name] = this.handlers[name] || []).push(fn); return this; };
  Room.prototype.connect = function (url, token) {
    var claims = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    this.name = claims.video.room;
    log.connects.push({ url: url, room: this.name, identity: claims.sub });
    this.state = "connected";
    this.remoteParticipants.set("agent", { identity: "agent-1", isAgent: true,
      attributes: { "lk.agent.state": "listening" } });
    return Promise.resolve();
  };
  Room.prototype.disconnect = function () { log.disconnects.push(this.name); return Promise.resolve(); };
  Room.prototype.startAudio = function () { return Promise.resolve(); };
  window.LivekitClient = { Room: Room, RoomEvent: RoomEvent, ParticipantKind: { AGENT: 4 } };
})();
"""


async def test_the_page_joins_talks_types_over_lk_chat_and_follows_new_chat(
    context: BrowserContext, voice_app: AppServer, fake: FakeLiveKit
) -> None:
    page = await context.new_page()
    await page.route(
        "**/static/vendor/livekit-client/livekit-client.umd.js*",  # versioned: ?v=<hash>
        lambda route: route.fulfill(body=STUB_LIVEKIT_CLIENT, content_type="text/javascript"),
    )
    chat = ChatPage(page, voice_app.url)
    await chat.signup()
    status = page.get_by_test_id("voice-status")
    await expect(status).to_have_attribute("data-state", "listening")
    await expect(status).to_have_text("Agent is listening")
    cid = uuid.UUID(await chat.conversation_id())
    [joined] = await page.evaluate("window.__lk.connects")
    assert joined["room"] == room_name_for(cid)
    assert joined["url"] == fake.url.replace("http://", "ws://")

    # Typed text goes to the agent over the room's chat stream, and to the app, both with one item id (the
    # worker reports the message under it), so it is stored once even if the worker dies.
    posts: list[Request] = []
    page.on("request", lambda request: posts.append(request) if request.url.endswith("/messages") else None)
    await chat.send("Typed into the room")
    [sent] = await page.evaluate("window.__lk.texts")
    assert {k: sent[k] for k in ("text", "topic", "room")} == {
        "text": "Typed into the room",
        "topic": "lk.chat",
        "room": room_name_for(cid),
    }
    [post] = posts
    item_id = parse_qs(post.post_data or "")["item_id"][0]
    assert sent["attributes"] == {"chatapp.item_id": f"typed-{item_id}"}
    await expect(chat.finals("user").locator(".bubble")).to_have_text(["Typed into the room"])
    async with connection() as conn:
        stored = await conn.fetch("SELECT item_id, text FROM utterance WHERE session = $1 AND role = 'user'", cid)
    assert [(r["item_id"], r["text"]) for r in stored] == [(f"typed-{item_id}", "Typed into the room")]

    # The microphone: on, then off; a denied permission says so and leaves typing alone.
    button = page.get_by_test_id("voice-button")
    await button.click()
    await expect(button).to_have_attribute("aria-pressed", "true")
    await button.click()
    await expect(button).to_have_attribute("aria-pressed", "false")
    assert await page.evaluate("window.__lk.mic") == [True, False]
    await page.evaluate("window.__lkDenyMic = true")
    await button.click()
    await expect(status).to_have_attribute("data-state", "denied")
    await expect(status).to_have_text("Microphone permission was denied. You can still type.")
    await page.evaluate("window.__lkDenyMic = false")

    # New Chat: leave the old room, join the new one with the token from the fresh panel.
    await page.locator("#new-chat-button").click()
    await expect(chat.panel).not_to_have_attribute("data-conversation-id", str(cid))
    new = uuid.UUID(await chat.conversation_id())
    await expect(status).to_have_attribute("data-state", "listening")
    connects = await page.evaluate("window.__lk.connects")
    assert [c["room"] for c in connects] == [room_name_for(cid), room_name_for(new)]
    assert await page.evaluate("window.__lk.disconnects") == [room_name_for(cid)]
