"""What a history list shows: a page of the saved (or archived) conversations, or of the search results when
there is a query, within the history filters."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from chatapp.conversations import queries
from chatapp.history import filters
from chatapp.history.search import search
from chatapp.history.service import saved_page


@dataclass(frozen=True)
class Listing:
    items: list[queries.SavedSummary]
    next_cursor: str | None
    # The search's highlighted snippet of each item (search results only).
    snippets: Sequence[str] = ()
    # Page 1 of the main list: the pinned conversations shown on top.
    pinned: list[queries.SavedSummary] = field(default_factory=list)
    # A search's first page: how many conversations match in all.
    total: int | None = None


async def history_list(
    owner: uuid.UUID, view: str, query: str, applied: filters.Applied, cursor: str | None
) -> Listing:
    """One page for the view ("" or "archived"), search words and applied filters; BadCursor for a cursor
    we did not make. A filter error shows nothing (the form says why)."""
    if applied.error:
        return Listing([], None)
    if query:
        # Search covers archived conversations too (marked), whichever view it was typed in.
        found = await search(owner, query, cursor, applied.params)
        return Listing(
            [h.item for h in found.hits], found.next_cursor, [h.snippet for h in found.hits], total=found.total
        )
    page = await saved_page(owner, cursor, filter_params=applied.params, view="archived" if view else "main")
    return Listing(page.items, page.next_cursor, pinned=page.pinned)
