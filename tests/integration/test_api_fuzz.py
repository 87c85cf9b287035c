"""Schemathesis against the real server's own OpenAPI schema: no 5xx, and every answer as documented.

Signed in (session cookie, and the `x-csrftoken` header on POSTs), with a real conversation: the ingest
route gets that conversation's bearer token and id, and the detail and save routes its id on every other
example, so the fuzzer reaches past the 401/404 answers into the handlers. A fixed seed, derandomized
generation and bounded examples keep it repeatable and quick (about 20 s after the server is up).

Schemathesis's pytest plugin does not run on pytest 9 (it writes `Function._nodeid`), so the test drives its
engine, the runner behind `schemathesis run`, and fails with every failure it reports.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis import Case
from schemathesis.engine import events
from schemathesis.hooks import GLOBAL_HOOK_DISPATCHER

from chatapp.conversations.agent_access import ingest_token
from tests.support import SECRET_KEY, AppServer, client_ip, event, ingest, open_conversation, signup, snapshot

INGEST = "/api/conversations/{conversation_id}/events"
WITH_SESSION_ID = ("/api/users/sessions/{session_id}",)
SAVE = "/api/users/sessions/save"
TOKEN = "/livekit/token"
MAX_EXAMPLES = 100
WELL_FORMED_UUID = re.compile(r"^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$")
NEGATIVE_DATA_REJECTION = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]


@dataclass
class Account:
    """A signed-in user with one real conversation, as the fuzzer uses them."""

    session: str
    csrf: str
    conversation_id: uuid.UUID
    turns: Iterator[int]


async def sign_up_with_a_conversation(server: AppServer) -> Account:
    async with httpx.AsyncClient(base_url=server.url, headers={"X-Forwarded-For": client_ip()}, timeout=30) as c:
        await signup(c)
        conversation_id = await open_conversation(c)
        session, csrf = c.cookies["chatapp_session"], c.cookies["csrftoken"]
    return Account(session, csrf, conversation_id, itertools.count())


def served_schema(server: AppServer, account: Account) -> schemathesis.BaseSchema:
    """The served schema, with credentials for its security schemes: schemathesis then knows when a request
    goes without them (and must be refused) and when it carries them."""
    config = schemathesis.Config.from_dict(
        {
            "seed": 20261202,
            "base-url": server.url,
            "headers": {"X-Forwarded-For": client_ip()},  # the fuzzer's own rate-limit bucket
            # Unknown query parameters are ignored, as HTTP APIs do (a cache-buster must not break a call).
            # No example database either: each run is the same run.
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
                "allow-extra-parameters": False,
            },
            # Schemathesis's list, plus 413: too many items (over a documented maxItems) is a 413, as documented.
            "checks": {"negative_data_rejection": {"expected-statuses": NEGATIVE_DATA_REJECTION}},
            "phases": {"stateful": {"enabled": False}},
            "auth": {
                "openapi": {
                    "sessionCookie": {"api_key": account.session},
                    "csrf": {"api_key": account.csrf},
                    "ingestToken": {"bearer": ingest_token(SECRET_KEY, account.conversation_id)},
                }
            },
            # The ingest token is this conversation's, so only its id can get past the 401.
            "parameters": {"path.conversation_id": str(account.conversation_id)},
            "operations": [
                {
                    # A cursor is opaque: one the server did not make is refused (400), however well-formed.
                    "include-name": "GET /api/users/sessions",
                    "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "400"]}},
                }
            ],
        }
    )
    return schemathesis.openapi.from_url(f"{server.url}/schema/openapi.json", config=config)


def aim_at_real_conversation(case: Case, account: Account) -> None:
    """On every other example, the conversation's id where a random one could only be a 404. Only over a
    well-formed id: replacing a malformed one would turn an invalid request into a valid one."""
    if next(account.turns) % 2:
        return
    real = str(account.conversation_id)
    params = case.path_parameters or {}
    if case.path in WITH_SESSION_ID and WELL_FORMED_UUID.match(str(params.get("session_id"))):
        case.path_parameters = {**params, "session_id": real}
    for field, path in (("session_id", SAVE), ("conversation_id", TOKEN)):
        body = case.body
        if case.path == path and isinstance(body, dict) and WELL_FORMED_UUID.match(str(body.get(field))):
            case.body = {**body, field: real}


def fuzz(schema: schemathesis.BaseSchema, account: Account) -> tuple[set[str], list[str]]:
    """Every phase schemathesis runs from the command line (examples, coverage of boundary and invalid values,
    then random fuzzing, valid and invalid), with its default checks: no 5xx, status, content type, headers
    and body as documented, invalid input refused, valid input accepted, no access without credentials.
    Returns the operations it ran and the failures it reported."""

    def before_call(context: schemathesis.HookContext, case: Case, kwargs: dict[str, Any]) -> None:
        # The CSRF middleware compares the x-csrftoken header with this cookie.
        case.cookies = {**(case.cookies or {}), "csrftoken": account.csrf}
        aim_at_real_conversation(case, account)

    GLOBAL_HOOK_DISPATCHER.register_hook_with_name(before_call, "before_call")
    failures: list[str] = []
    operations: set[str] = set()
    try:
        for event in schemathesis.engine.from_schema(schema).execute():
            if isinstance(event, events.ScenarioFinished):
                operations.add(event.recorder.label)
                for checks in event.recorder.checks.values():
                    failures.extend(
                        f"{event.recorder.label}: {info.failure.title}\n{info.failure.message}\n{info.code_sample}"
                        for info in (check.failure_info for check in checks)
                        if info is not None
                    )
            elif isinstance(event, events.NonFatalError | events.FatalError):
                failures.append(f"{type(event).__name__}: {getattr(event, 'value', None) or event.exception!r}")
    finally:
        GLOBAL_HOOK_DISPATCHER.unregister(before_call)
    return operations, sorted(set(failures))


async def test_api_answers_as_documented(app_server: AppServer) -> None:
    account = await sign_up_with_a_conversation(app_server)
    operations, failures = await asyncio.to_thread(fuzz, served_schema(app_server, account), account)
    assert operations >= {f"POST {INGEST}", f"POST {SAVE}", f"GET {WITH_SESSION_ID[0]}", "GET /healthz"}
    assert not failures, "\n\n".join(failures)


async def test_voice_api_answers_as_documented(voice_app: AppServer) -> None:
    """With LiveKit configured (a fake LiveKit server), /livekit/token joins the schema."""
    account = await sign_up_with_a_conversation(voice_app)
    operations, failures = await asyncio.to_thread(fuzz, served_schema(voice_app, account), account)
    assert f"POST {TOKEN}" in operations
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("final", "1", "Expected `bool`, got `str`"),
        ("final", 1, "Expected `bool`, got `int`"),
        ("timestamp", 0, "Expected `datetime | null`, got `int`"),
    ],
)
async def test_ingest_takes_json_types_only(
    client: httpx.AsyncClient, field: str, value: object, expected: str
) -> None:
    """Found by the fuzzer: Litestar converts bodies leniently ("1" passed as true, 0 as 1970)."""
    await signup(client)
    cid = await open_conversation(client)
    before = await snapshot(cid)
    response = await ingest(client, cid, [event("typed-1", "hello") | {field: value}])
    assert response.status_code == 400, response.text
    assert response.json() == {"detail": f"Invalid body: {expected} - at `$.events[0].{field}`", "status_code": 400}
    assert await snapshot(cid) == before


async def test_the_schema_is_the_json_api_with_its_real_errors(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    operations = {f"{m.upper()} {p}": o for p, item in schema["paths"].items() for m, o in item.items()}
    assert set(operations) == {
        "GET /healthz",
        "GET /api/users/sessions",
        f"GET {WITH_SESSION_ID[0]}",
        f"POST {SAVE}",
        f"POST {INGEST}",
    }  # no HTML page; /livekit/token joins them when LiveKit is configured
    error = {"$ref": "#/components/schemas/ErrorBody"}
    for label, operation in operations.items():
        for status, response in operation["responses"].items():
            if status >= "400" and label != "GET /healthz":
                assert response["content"]["application/json"]["schema"] == error, (label, status)
    assert set(operations[f"POST {SAVE}"]["responses"]) == {
        "200",
        *["400", "401", "403", "404", "413", "415", "422", "503"],
    }
    assert set(operations[f"POST {INGEST}"]["responses"]) == {
        "200",
        *["400", "401", "404", "410", "413", "415", "422", "503"],
    }
    save_body = operations[f"POST {SAVE}"]["requestBody"]["content"]["application/json"]["schema"]
    assert save_body["required"] == ["session_id"]
    assert save_body["properties"]["messages"]["maxItems"] == 1000
    assert schema["components"]["schemas"]["IngestEvent"]["additionalProperties"] is False
    assert operations[f"POST {INGEST}"]["security"] == [{"ingestToken": []}]
    assert operations[f"POST {SAVE}"]["security"] == [{"sessionCookie": [], "csrf": []}]


async def test_the_token_api_answers_errors_in_json(voice_app: AppServer) -> None:
    """Found by the fuzzer: /livekit/token is JSON but, outside /api/, answered errors as pages (a 303 to the
    login page when signed out) unless the client asked for JSON."""
    async with httpx.AsyncClient(base_url=voice_app.url, headers={"X-Forwarded-For": client_ip()}) as anonymous:
        signed_out = await anonymous.post("/livekit/token", json={"conversation_id": str(uuid.uuid4())})
        await signup(anonymous)
        csrf = {"x-csrftoken": str(anonymous.cookies.get("csrftoken"))}
        missing = await anonymous.post("/livekit/token", json={"conversation_id": str(uuid.uuid4())}, headers=csrf)
    assert signed_out.status_code == 401
    assert signed_out.json() == {"detail": "Authentication required", "status_code": 401}
    assert missing.status_code == 404
    assert missing.json() == {"detail": "Not found", "status_code": 404}
