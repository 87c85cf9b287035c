"""The browser tests' kit: page objects (what a person sees and does, by the ids and test ids the UI contract
promises), an axe accessibility check, a CSP violation watcher, and a person with saved history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from playwright.async_api import BrowserContext, Locator, Page, expect

from chatapp.accounts.service import get_user
from chatapp.core.database import connection
from tests.factories import make_saved
from tests.support import PASSWORD, AppServer, unique_email


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


AXE = Path(__file__).parent / "vendor" / "axe.min.js"


ALWAYS = {"scrollable-region-focusable", "aria-prohibited-attr", "color-contrast"}


async def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's violations that matter here: the three named rules and anything serious or critical."""
    await page.add_script_tag(path=str(AXE))
    # axe files an aria-label on a role-less element under "incomplete": for the named rules that counts too.
    found: list[dict[str, Any]] = await page.evaluate(
        """async () => { const r = await axe.run(document, {resultTypes: ['violations', 'incomplete']});
             const one = (v, kind) => ({kind, id: v.id, impact: v.impact,
                                        nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))});
             return r.violations.map(v => one(v, 'violation')).concat(r.incomplete.map(v => one(v, 'incomplete'))); }"""
    )
    return [
        v
        for v in found
        if (v["kind"] == "violation" and (v["id"] in ALWAYS or v["impact"] in ("serious", "critical")))
        or (v["kind"] == "incomplete" and v["id"] in ALWAYS - {"color-contrast"})
    ]


WATCH_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", function (e) {
  var where = e.target && e.target.outerHTML ? e.target.outerHTML.slice(0, 120) : "";
  window.__cspViolations.push([e.violatedDirective, e.blockedURI || "inline", e.sourceFile || "", where].join(" "));
});
"""


async def signed_up_with_history(
    context: BrowserContext, app_server: AppServer, count: int
) -> tuple[ChatPage, list[str]]:
    chat = ChatPage(await context.new_page(), app_server.url)
    email = await chat.signup()
    async with connection() as conn:
        user = await get_user(await conn.fetchval("SELECT id FROM user_account WHERE email = $1", email))
    assert user is not None
    now = datetime.now(UTC)
    ids = [
        str(
            await make_saved(
                user,
                f"Trip {n:02d}",
                now - timedelta(hours=20 * n),
                [("user", f"Trip {n:02d} to Kyoto" if n == 7 else f"Trip {n:02d}")],
            )
        )
        for n in range(count)
    ]
    return chat, ids
