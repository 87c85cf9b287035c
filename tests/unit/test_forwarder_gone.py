"""The worker's forwarder treats 410 (the app no longer takes late finals) like 404: gone, dropped for good."""

from __future__ import annotations

import pytest

from tests.unit.test_livekit_forwarder import Ingest, _at, ingest  # noqa: F401  (ingest is a fixture)


async def test_a_410_drops_the_conversations_events_for_good(ingest: Ingest, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    app, make = ingest
    app.script = [410]
    forwarder = make()
    forwarder._final("a", "user", "secret words", False, _at())
    forwarder.start()
    assert await forwarder.flush(5)
    forwarder._final("b", "user", "more", False, _at())
    assert await forwarder.flush(5)
    assert app.events == []
    assert forwarder.dropped == 2
    assert forwarder.attempts == 1  # not retried
    assert "is gone" in caplog.text
    assert "secret words" not in caplog.text
