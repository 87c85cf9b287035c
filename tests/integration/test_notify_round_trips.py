"""Round trips to PostgreSQL on the ingest path with postgres channels: a request's events go out in one NOTIFY
statement however many there are, in order, and a one-final ingest makes no statement it could do without."""

from __future__ import annotations

import asyncio

import pytest

from chatapp.conversations import pipeline as pipeline_module
from chatapp.conversations.live_events import Final, Interim
from tests.factories import final, interim, make_conversation
from tests.support_statements import StatementLog, log_statements
from tests.support_stream import live_pipeline


@pytest.fixture
def log(monkeypatch: pytest.MonkeyPatch) -> StatementLog:
    """The pipeline's pooled connection and the hub's own connections."""
    return log_statements(monkeypatch, pipeline_module, own_connections=True)


async def test_a_100_final_ingest_notifies_in_one_round_trip_in_order(db: str, log: StatementLog) -> None:
    c = await make_conversation()
    async with live_pipeline("postgres", db) as pipeline, pipeline.hub.listen(c.id, c.owner) as listener:
        await pipeline.apply(c.id, [final(c.id, "warm-up", "first")], source="api")  # connects, prepares
        await asyncio.wait_for(listener.get(), 10)
        log.take()
        batch = [final(c.id, f"f{n}", f"final {n}", role="agent") for n in range(100)]
        await pipeline.apply(c.id, [*batch, interim(c.id, "next", "And then")], source="api")
        received = [await asyncio.wait_for(listener.get(), 10) for _ in range(101)]
    assert len([s for s in log.take() if "pg_notify" in s]) == 1
    finals = [e for e in received if isinstance(e, Final)]
    assert [e.seq for e in finals] == list(range(2, 102))
    assert [e.text for e in finals] == [f"final {n}" for n in range(100)]
    assert isinstance(received[-1], Interim)


async def test_large_finals_in_one_request_still_go_in_one_statement(db: str, log: StatementLog) -> None:
    """Parts of a final over the NOTIFY payload limit travel in the same statement, and arrive whole."""
    c = await make_conversation()
    text = "wörd " * 2500  # about 15 kB of UTF-8: several parts
    async with live_pipeline("postgres", db) as pipeline, pipeline.hub.listen(c.id, c.owner) as listener:
        await pipeline.apply(c.id, [final(c.id, "a", text), final(c.id, "b", "small")], source="api")
        first = await asyncio.wait_for(listener.get(), 10)
        second = await asyncio.wait_for(listener.get(), 10)
    assert len([s for s in log.take() if "pg_notify" in s]) == 1
    assert isinstance(first, Final)
    assert (first.seq, first.text) == (1, text)
    assert isinstance(second, Final)
    assert (second.seq, second.text) == (2, "small")


async def test_a_one_final_ingest_makes_six_round_trips(db: str, log: StatementLog) -> None:
    """BEGIN, lock the conversation, look up the item, insert it and advance last_seq, COMMIT, then NOTIFY (a final
    is durable before anyone hears of it): no connect, prepare or reset on a warm connection, one NOTIFY."""
    c = await make_conversation()
    async with live_pipeline("postgres", db) as pipeline, pipeline.hub.listen(c.id, c.owner) as listener:
        await pipeline.apply(c.id, [final(c.id, "warm-up", "first")], source="api")
        await asyncio.wait_for(listener.get(), 10)
        log.take()
        await pipeline.apply(c.id, [final(c.id, "one", "Hello")], source="api")
        await asyncio.wait_for(listener.get(), 10)
        statements = log.take()
    assert [s.split()[0] for s in statements] == ["BEGIN;", "SELECT", "SELECT", "WITH", "COMMIT;", "SELECT"]
    assert "pg_notify" in statements[-1]
