"""deploy/systemd/chatapp-agent.service on an app host, run as systemd would. No LiveKit server can run in the
suite, so this shows the unit's command and environment work up to the point where LiveKit is needed."""

from __future__ import annotations

from tests.support_hosts import Deployment


def test_the_agent_unit_starts_and_asks_for_livekit_settings_when_they_are_empty(deployment: Deployment) -> None:
    service = deployment.service("app1", "chatapp-agent.service")
    service.start()
    assert service.process is not None
    assert service.process.wait(60) == 2
    assert "set LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET to run the agent worker" in service.log.read_text()
