"""Ingest tokens expire with their conversation: late finals are stored only within the grace window after its end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from chatapp.conversations import queries
from tests.factories import make_saved, make_user
from tests.support import event, ingest


async def test_late_finals_within_the_grace_window_are_stored(client: httpx.AsyncClient) -> None:
    owner = await make_user()
    # ended a minute ago (saved conversations last 5 minutes in make_saved); the default window is 120 s
    cid = await make_saved(owner, "Recent trip", datetime.now(UTC) - timedelta(minutes=6))

    response = await ingest(client, cid, [event("late-1", "Said just before the end")])

    assert response.status_code == 200
    assert response.json()["stored"] == 1
    assert [u.text for u in await queries.list_utterances(cid)] == ["Recent trip", "Said just before the end"]


async def test_finals_after_the_grace_window_are_refused_with_410_and_not_stored(client: httpx.AsyncClient) -> None:
    owner = await make_user()
    cid = await make_saved(owner, "Old trip", datetime.now(UTC) - timedelta(hours=2))

    response = await ingest(client, cid, [event("late-1", "Far too late"), event("late-2", "Also too late")])

    assert response.status_code == 410
    assert response.json() == {"detail": "This conversation ended too long ago.", "status_code": 410}
    assert [u.text for u in await queries.list_utterances(cid)] == ["Old trip"]
    saved = await queries.get_conversation(cid)
    assert saved is not None
    assert saved.last_seq == 1
