"""asyncpg's client-side errors caused by a connection PostgreSQL closed mid-transaction are an outage (503),
not a bug (500): what the chaos test's database outage met as "unhandled InterfaceError"."""

from __future__ import annotations

import logging

import asyncpg
import pytest
from litestar import Litestar, get
from litestar.testing import TestClient

from chatapp.accounts import web
from chatapp.core.database import OUTAGE_ERRORS, is_outage


def closed_mid_transaction() -> asyncpg.InterfaceError:
    """What `async with conn.transaction()` raises when the connection died inside it."""
    try:
        try:
            raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation")
        except asyncpg.exceptions.ConnectionDoesNotExistError:
            raise asyncpg.InterfaceError("cannot call Transaction.__aexit__(): the underlying connection is closed")  # noqa: B904
    except asyncpg.InterfaceError as exc:
        return exc


def test_an_error_raised_while_handling_a_lost_connection_is_an_outage() -> None:
    error = closed_mid_transaction()
    assert not isinstance(error, OUTAGE_ERRORS)
    assert is_outage(error)
    wrapped = RuntimeError("wrapped")
    wrapped.__cause__ = error
    assert is_outage(wrapped)


def test_client_errors_of_our_own_are_not_an_outage() -> None:
    assert not is_outage(asyncpg.InterfaceError("cannot perform operation: another operation is in progress"))
    assert not is_outage(asyncpg.exceptions.UniqueViolationError("duplicate key"))
    assert not is_outage(ValueError("bad"))
    looped = ValueError("a")
    looped.__context__ = KeyError("b")
    looped.__context__.__context__ = looped
    assert not is_outage(looped)


@pytest.mark.parametrize(("make", "status"), [(closed_mid_transaction, 503), (lambda: RuntimeError("bug"), 500)])
def test_the_catch_all_handler_answers_503_for_an_outage_and_500_for_a_bug(
    make: object, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    @get("/api/thing")
    async def thing() -> None:
        raise make()  # type: ignore[operator]

    app = Litestar([thing], exception_handlers={Exception: web.server_error}, logging_config=None)
    with caplog.at_level(logging.WARNING), TestClient(app) as client:
        response = client.get("/api/thing")
    assert response.status_code == status
    if status == 503:
        assert response.json() == {"detail": web.DATABASE_DOWN, "status_code": 503}
        assert response.headers["retry-after"]
        assert "unhandled" not in caplog.text
    else:
        assert "unhandled RuntimeError on GET /api/thing" in caplog.text
