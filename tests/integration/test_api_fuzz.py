"""Schemathesis against the real server's own OpenAPI schema: no 5xx, and every answer as documented.

Signed in (session cookie, and the `x-csrftoken` header on POSTs), with a real conversation: the ingest
route gets that conversation's bearer token, and the detail and save routes its id on every other example,
so the fuzzer reaches past the 401/404 answers into the handlers. Fixed seed and bounded examples keep it
repeatable and quick.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import Case, GenerationMode

from chatapp.conversations.service import ingest_token
from tests.integration.test_live_stream import open_conversation
from tests.support import SECRET_KEY, AppServer, client_ip, signup

INGEST = "/api/conversations/{conversation_id}/events"
WITH_SESSION_ID = ("/api/users/sessions/{session_id}",)
SAVE = "/api/users/sessions/save"
MAX_EXAMPLES = 40


@dataclass
class Account:
    """A signed-in user with one real conversation, as the fuzzer uses them."""

    cookies: dict[str, str]
    csrf: str
    conversation_id: uuid.UUID
    turns: Iterator[int]


@pytest.fixture(scope="module")
async def account(app_server: AppServer) -> Account:
    async with httpx.AsyncClient(base_url=app_server.url, headers={"X-Forwarded-For": client_ip()}, timeout=30) as c:
        await signup(c)
        conversation_id = await open_conversation(c)
        cookies = {name: value for name, value in c.cookies.items() if value}
    return Account(cookies, cookies["csrftoken"], conversation_id, itertools.count())


@pytest.fixture(scope="module")
def api_schema(app_server: AppServer) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_url(f"{app_server.url}/schema/openapi.json")
    schema.config.update(base_url=app_server.url)
    return schema


def aim_at_real_conversation(case: Case, account: Account) -> dict[str, str]:
    """The conversation's id and token where a random one could only be refused; the headers to send."""
    headers = {"X-Forwarded-For": "10.250.0.1"}
    real = next(account.turns) % 2 == 0
    if case.path == INGEST:
        case.path_parameters = {**(case.path_parameters or {}), "conversation_id": str(account.conversation_id)}
        headers["Authorization"] = f"Bearer {ingest_token(SECRET_KEY, account.conversation_id)}"
    elif case.path in WITH_SESSION_ID and real:
        case.path_parameters = {**(case.path_parameters or {}), "session_id": str(account.conversation_id)}
    elif case.path == SAVE and real and isinstance(case.body, dict) and "session_id" in case.body:
        case.body = {**case.body, "session_id": str(account.conversation_id)}
    if case.method.upper() == "POST" and case.path != INGEST:
        headers["x-csrftoken"] = account.csrf
    return headers


FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
    report_multiple_bugs=False,
)


def test_api_answers_as_documented(api_schema: schemathesis.BaseSchema, account: Account) -> None:
    """Schemathesis's pytest plugin does not run on pytest 9 (it writes `Function._nodeid`): its Python API
    does the same per operation, valid and invalid inputs alike, and every failure is reported at the end."""
    failures: list[str] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} >= {INGEST, SAVE, *WITH_SESSION_ID}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @FUZZ_SETTINGS
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Case) -> None:
                headers: dict[str, Any] = aim_at_real_conversation(case, account)
                case.call_and_validate(headers=headers, cookies=account.cookies, timeout=30)

            try:
                run()
            except Exception as exc:
                failures.append(f"{operation.label} ({mode.value}):\n{exc}")
    assert not failures, "\n\n".join(failures)
