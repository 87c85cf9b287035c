"""Playwright in Debian's Chromium (downloading browsers is impossible here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import BrowserContext

from tests.support import client_ip
from tests.support_browser import CHROMIUM, CHROMIUM_ARGS

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.path):
            item.add_marker(pytest.mark.e2e)


@pytest_asyncio.fixture(loop_scope="session")
async def context(new_context: Any) -> BrowserContext:
    """Each test browses from its own client address (the server trusts X-Forwarded-For from the test host),
    so the login rate limit counts per test as it would per person."""
    context: BrowserContext = await new_context(extra_http_headers={"X-Forwarded-For": client_ip()})
    return context
