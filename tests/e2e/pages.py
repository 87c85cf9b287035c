"""Page objects: what a person sees and does, by the ids and test ids the UI contract promises."""

from __future__ import annotations

from dataclasses import dataclass

from playwright.async_api import Locator, Page, expect

from tests.support import PASSWORD, unique_email


@dataclass
class ChatPage:
    page: Page
    base_url: str

    @property
    def panel(self) -> Locator:
        return self.page.locator("#chat-panel")

    @property
    def messages(self) -> Locator:
        return self.page.locator("#messages-container .message")

    def finals(self, role: str) -> Locator:
        return self.page.locator(f'#messages-container .message[data-role="{role}"][data-final="true"]')

    async def conversation_id(self) -> str:
        value = await self.panel.get_attribute("data-conversation-id")
        assert value
        return value

    async def signup(self, display_name: str = "Ada Traveller") -> str:
        email = unique_email()
        await self.page.goto(f"{self.base_url}/signup")
        await self.page.get_by_label("Email").fill(email)
        await self.page.get_by_label("Display name").fill(display_name)
        await self.page.get_by_label("Password").fill(PASSWORD)
        await self.page.get_by_role("button", name="Sign up").click()
        await expect(self.panel).to_be_visible()
        return email

    async def login(self, email: str) -> None:
        await self.page.goto(f"{self.base_url}/login")
        await self.page.get_by_label("Email").fill(email)
        await self.page.get_by_label("Password").fill(PASSWORD)
        await self.page.get_by_role("button", name="Log in").click()
        await expect(self.panel).to_be_visible()

    async def send(self, text: str) -> None:
        await self.page.locator("#message-input").fill(text)
        await self.page.locator("#message-input").press("Enter")
        await expect(self.page.locator("#message-input")).to_have_value("")

    async def wait_for_agent_reply(self, count: int) -> None:
        await expect(self.finals("agent")).to_have_count(count, timeout=15_000)
