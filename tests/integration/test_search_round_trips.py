"""A search page is one statement to PostgreSQL (the matches, their count, the ranking and the highlighted
snippets together), and every hit shown has its snippet, also on a page that spans two ranked windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chatapp.history import search as search_module
from chatapp.history.search import SEARCH_CANDIDATES, search
from tests.factories import make_saved, make_user
from tests.support_statements import log_statements


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every statement the search sends on its pooled connection."""
    return log_statements(monkeypatch, search_module).statements


async def test_a_search_page_is_one_statement_with_its_count_and_snippets(db: str, statements: list[str]) -> None:
    user = await make_user()
    now = datetime.now(UTC)
    for n in range(3):
        await make_saved(user, f"Trip {n}", now - timedelta(hours=n), [("user", f"lagoon trip & swim {n}")])
    await make_saved(user, "Other", now, [("user", "mountains")])

    page = await search(user.id, "lagoon")

    assert len(statements) == 1
    assert page.total == 3
    assert len(page.hits) == 3
    for hit in page.hits:
        # Highlighted, and the person's text escaped around the highlight.
        assert "<mark>lagoon</mark>" in hit.snippet
        assert "&amp; swim" in hit.snippet


async def test_every_hit_of_a_page_spanning_two_windows_has_its_snippet(db: str) -> None:
    user = await make_user()
    now = datetime.now(UTC)
    count = SEARCH_CANDIDATES + 10
    for n in range(count):
        await make_saved(user, f"Fjord {n}", now - timedelta(hours=n), [("user", f"fjord cruise {n}")])

    seen = 0
    cursor: str | None = None
    while True:
        page = await search(user.id, "fjord", cursor, limit=30)  # the 4th page: 10 of one window, 10 of the next
        assert all("<mark>fjord</mark>" in hit.snippet for hit in page.hits)
        seen += len(page.hits)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == count
