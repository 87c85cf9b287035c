"""Search pages through every match, window after window, each exactly once, without date headings."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx

from chatapp.history.search import SEARCH_CANDIDATES, search
from tests.factories import make_saved, make_user
from tests.support import ITEM, NEXT, AppServer, person

HEADING = re.compile(r'data-testid="history-group"')


async def search_pages(client: httpx.AsyncClient, q: str) -> tuple[list[list[str]], int]:
    """Follow the search results as the browser's infinite scroll does: ids per page, and headings seen."""
    html = (await client.get("/history", params={"q": q})).text
    pages, headings = [ITEM.findall(html)], len(HEADING.findall(html))
    while match := NEXT.search(html):
        html = (await client.get(match.group(1).replace("&amp;", "&"), headers={"HX-Request": "true"})).text
        pages.append(ITEM.findall(html))
        headings += len(HEADING.findall(html))
    return pages, headings


async def test_all_130_matches_are_reachable_once_across_pages(app_server: AppServer) -> None:
    assert SEARCH_CANDIDATES < 130  # the point: more matches than one ranked window
    async with person(app_server) as (client, user):
        now = datetime.now(UTC)
        matching = []
        for n in range(130):
            # Every 7th one says "lagoon" twice, so ranks differ within each window.
            text = "a lagoon lagoon trip" if n % 7 == 0 else "a lagoon trip"
            matching.append(await make_saved(user, f"Trip {n}", now - timedelta(hours=5 * n), [("user", text)]))
        for n in range(5):
            await make_saved(user, f"Other {n}", now - timedelta(hours=5 * n + 1), [("user", "mountains")])

        pages, headings = await search_pages(client, "lagoon")

        found = [i for page in pages for i in page]
        assert sorted(found) == sorted(str(m) for m in matching)
        assert len(found) == len(set(found)) == 130
        assert all(len(page) == 20 for page in pages[:-1])
        assert pages[-1]  # never an empty last page
        assert headings == 0  # ranked results show their own dates instead of repeated group headings
        # Windows are newest first: the newest SEARCH_CANDIDATES matches all come before any older one.
        newest = {str(m) for m in matching[:SEARCH_CANDIDATES]}
        assert set(found[:SEARCH_CANDIDATES]) == newest
        # Within a window the better match comes first.
        first_window = found[:SEARCH_CANDIDATES]
        doubled = [str(m) for n, m in enumerate(matching[:SEARCH_CANDIDATES]) if n % 7 == 0]
        assert set(first_window[: len(doubled)]) == set(doubled)

        listing = (await client.get("/history")).text
        assert HEADING.search(listing)  # the plain list still groups by date
        assert (await client.get("/history", params={"q": "lagoon", "cursor": "bm90LWpzb24"})).status_code == 400


async def test_exactly_one_full_window_ends_without_an_empty_page() -> None:
    user = await make_user()
    now = datetime.now(UTC)
    made = {
        await make_saved(user, f"Fjord {n}", now - timedelta(hours=n), [("user", "fjord cruise")])
        for n in range(SEARCH_CANDIDATES)
    }
    seen: list[object] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await search(user.id, "fjord", cursor, limit=25)
        pages += 1
        assert page.hits
        seen += [h.item.id for h in page.hits]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == SEARCH_CANDIDATES // 25
    assert set(seen) == made
    assert len(seen) == len(made)
