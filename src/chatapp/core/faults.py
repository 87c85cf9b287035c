"""Test-only fault switches, so tests can show what a person sees when things break.

The routes exist only when CHATAPP_TEST_FAULTS is on, and Settings refuses that in production.
"""

from __future__ import annotations

import os
from typing import Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.datastructures import State


class InjectedFault(RuntimeError):
    """Raised where a switch is armed, standing in for the real failure (a database write error, ...)."""


class Faults:
    def __init__(self) -> None:
        self._armed: dict[str, int] = {}

    def arm(self, name: str, times: int = 1) -> None:
        self._armed[name] = times

    def clear(self) -> None:
        self._armed.clear()

    def consume(self, name: str) -> bool:
        """True (once per arming) when the switch is armed."""
        remaining = self._armed.get(name, 0)
        if remaining:
            self._armed[name] = remaining - 1
        return remaining > 0

    def check(self, name: str) -> None:
        if self.consume(name):
            raise InjectedFault(name)


class FaultRequest(msgspec.Struct):
    name: str
    times: int = 1


class FaultController(Controller):
    path = "/_test"
    include_in_schema = False

    @post("/faults", status_code=204)
    async def arm(self, state: State, data: FaultRequest) -> None:
        faults: Faults = state.faults
        faults.arm(data.name, data.times)

    @post("/faults/clear", status_code=204)
    async def clear(self, state: State) -> None:
        faults: Faults = state.faults
        faults.clear()

    @post("/drop-streams", status_code=204)
    async def drop_streams(self, request: Request[Any, Any, Any], state: State) -> None:
        """End every open SSE stream, as a proxy timeout or a network blip would."""
        state.conversations.hub.drop_all()

    @get("/agents")
    async def agents(self, state: State) -> dict[str, Any]:
        """This process's running agents, so tests can count agents across app processes."""
        running = getattr(state.conversations.agents.runtime, "running", list)
        return {
            "process": state.conversations.agents.ownership.holder,
            "pid": os.getpid(),
            "agents": sorted(str(c) for c in running()),
        }
