"""Route guards are coroutine functions: Litestar runs a plain-function guard in its thread pool on every request,
and for the agent's ingest POST that hand-off was a third of the request's profile (issue 25)."""

from __future__ import annotations

import inspect

import pytest
from litestar.handlers import BaseRouteHandler

from chatapp.core.settings import Settings


# Building the app in-process meets Litestar's notices about parameter styles the app still uses; not this test's.
@pytest.mark.filterwarnings("ignore::litestar.exceptions.LitestarDeprecationWarning")
def test_every_route_guard_is_a_coroutine_function() -> None:
    from chatapp.app import create_app  # here: importing it warns, and the mark above only covers the test

    settings = Settings.from_env({"CHATAPP_SECRET_KEY": "x" * 40, "CHATAPP_DATA_DIR": "/nonexistent"})
    app = create_app(settings, dsn="postgresql://nobody@127.0.0.1:1/none")  # builds routes; connects at start-up
    guards: dict[str, object] = {}
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            assert isinstance(handler, BaseRouteHandler)
            for guard in handler.guards or []:
                guards[f"{route.path} {getattr(guard, '__qualname__', guard)}"] = guard
    assert any("/events" in where for where in guards)  # the ingest route's guard was found
    plain = sorted(where for where, guard in guards.items() if not _is_async(guard))
    assert plain == []


def _is_async(guard: object) -> bool:
    call = getattr(guard, "__call__", None)  # noqa: B004 - a guard may be an object with an async __call__
    return inspect.iscoroutinefunction(guard) or inspect.iscoroutinefunction(call)
