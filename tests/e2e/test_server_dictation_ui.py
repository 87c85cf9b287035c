"""Dictation in Chromium without Google's speech service: with the app's speech-to-text the mic button records
from the (fake) microphone and the words land as the user's message; without it and without Web Speech the
button says dictation is unavailable; and an error never blames a permission the page has."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, BrowserType, expect

from chatapp.conversations import queries
from tests.e2e.pages import ChatPage
from tests.fakes.speech import synthesize, wav_bytes
from tests.support import AppServer, client_ip
from tests.support_browser import CHROMIUM, CHROMIUM_ARGS
from tests.support_livekit import SpeechFake

PHRASE = "plan a trip to lisbon"
NO_WEB_SPEECH = "delete window.SpeechRecognition; delete window.webkitSpeechRecognition;"
# Web Speech as Chromium without Google's service behaves: it fails at once with "not-allowed".
REFUSING_WEB_SPEECH = """
window.SpeechRecognition = class {
  start() { setTimeout(() => { this.onerror({ error: "not-allowed" }); this.onend(); }, 50); }
  stop() {}
};
"""


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SpeechFake]:
    with SpeechFake.running(Path(tmp_path_factory.mktemp("speech")), [PHRASE, "book a hotel in rome"]) as fake:
        yield fake


@pytest.fixture(scope="module")
def stt_app(db: str, speech: SpeechFake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    server = AppServer.start(db, Path(tmp_path_factory.mktemp("stt-ui")), CHATAPP_STT_BASE_URL=speech.base_url)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def spoken(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the fake microphone plays: a second of silence (playback starts at getUserMedia), the phrase, and
    silence after it (the recording goes on until the button is pressed again)."""
    rate = 16_000
    silence = b"\0\0" * rate
    path = Path(tmp_path_factory.mktemp("mic")) / "phrase.wav"
    path.write_bytes(wav_bytes(silence + synthesize(PHRASE, rate) + silence * 2, rate))
    return path


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def microphone_browser(browser_type: BrowserType, spoken: Path) -> AsyncIterator[Browser]:
    """A Chromium of its own: the fake microphone is a launch argument."""
    fake_microphone = [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={spoken}%noloop",
    ]
    browser = await browser_type.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *fake_microphone])
    yield browser
    await browser.close()


async def test_the_mic_records_and_the_apps_speech_to_text_stores_the_words_as_the_users_message(
    microphone_browser: Browser, stt_app: AppServer, screenshots: Path, speech: SpeechFake
) -> None:
    context = await microphone_browser.new_context(extra_http_headers={"X-Forwarded-For": client_ip()})
    await context.add_init_script(REFUSING_WEB_SPEECH)  # the server's speech-to-text is used, not the browser's
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    chat = ChatPage(page, stt_app.url)
    await chat.signup()
    await chat.wait_for_agent_reply(1)
    button = page.get_by_test_id("dictate-button")
    await expect(button).to_have_attribute("data-dictation", "server")
    await expect(button).to_be_visible()

    await button.click()
    await expect(button).to_have_attribute("aria-pressed", "true")
    await expect(button).to_have_attribute("data-state", "recording")
    await page.wait_for_timeout(4_500)  # the phrase is ~2 s after a second of silence
    await button.click()

    await expect(chat.finals("user").locator(".bubble")).to_have_text([PHRASE], timeout=20_000)
    await expect(button).to_have_attribute("aria-pressed", "false")
    await expect(button).to_have_attribute("data-state", "ready", timeout=10_000)
    await chat.wait_for_agent_reply(2)
    await expect(page.locator("#toasts .toast-error")).to_have_count(0)
    await page.screenshot(path=screenshots / "server-dictation.png")
    assert errors == []
    cid = uuid.UUID(await chat.conversation_id())
    users = [
        (u.text, u.item_id.startswith("dictation-")) for u in await queries.list_utterances(cid) if u.role == "user"
    ]
    assert users == [(PHRASE, True)]
    assert [r["kind"] for r in speech.requests()] == ["transcription"]  # one recording, sent once
    await context.close()


async def test_without_server_speech_or_web_speech_the_button_says_dictation_is_unavailable(
    context: BrowserContext, app_server: AppServer
) -> None:
    await context.add_init_script(NO_WEB_SPEECH)
    chat = ChatPage(await context.new_page(), app_server.url)
    await chat.signup()
    button = chat.page.get_by_test_id("dictate-button")
    await expect(button).to_be_visible()
    await expect(button).to_have_attribute("aria-disabled", "true")
    await expect(button).to_have_accessible_name("Dictation unavailable")
    await button.click(force=True)  # aria-disabled: Playwright waits for "enabled", a person's click still lands
    await expect(chat.page.locator("#toasts .toast")).to_contain_text("Dictation is unavailable in this browser")
    cid = uuid.UUID(await chat.conversation_id())
    assert [u for u in await queries.list_utterances(cid) if u.role == "user"] == []


async def test_a_refusing_speech_service_is_not_blamed_on_a_granted_microphone(
    context: BrowserContext, app_server: AppServer
) -> None:
    await context.grant_permissions(["microphone"])
    await context.add_init_script(REFUSING_WEB_SPEECH)
    chat = ChatPage(await context.new_page(), app_server.url)
    await chat.signup()
    button = chat.page.get_by_test_id("dictate-button")
    await expect(button).to_have_attribute("data-dictation", "browser")
    await button.click()
    toast = chat.page.locator("#toasts .toast")
    await expect(toast).to_contain_text("Dictation is unavailable in this browser")
    text: Any = (await toast.inner_text()).lower()
    assert "denied" not in text
    assert "permission" not in text
    await expect(button).to_have_attribute("aria-pressed", "false")
