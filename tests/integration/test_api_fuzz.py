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

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import Case, GenerationMode

from chatapp.conversations.service import ingest_token
from tests.integration.test_bad_input import snapshot
from tests.integration.test_live_stream import event, ingest, open_conversation
from tests.support import SECRET_KEY, AppServer, client_ip, signup

INGEST = "/api/conversations/{conversation_id}/events"
WITH_SESSION_ID = ("/api/users/sessions/{session_id}",)
SAVE = "/api/users/sessions/save"
MAX_EXAMPLES = 40
FUZZER_ADDRESS = client_ip()


@dataclass
class Account:
    """A signed-in user with one real conversation, as the fuzzer uses them."""

    session: str
    csrf: str
    conversation_id: uuid.UUID
    turns: Iterator[int]


@pytest.fixture(scope="module")
async def account(app_server: AppServer) -> Account:
    async with httpx.AsyncClient(base_url=app_server.url, headers={"X-Forwarded-For": client_ip()}, timeout=30) as c:
        await signup(c)
        conversation_id = await open_conversation(c)
        session, csrf = c.cookies["chatapp_session"], c.cookies["csrftoken"]
    return Account(session, csrf, conversation_id, itertools.count())


@pytest.fixture(scope="module")
def api_schema(app_server: AppServer, account: Account) -> schemathesis.BaseSchema:
    """The served schema, with credentials for its security schemes: schemathesis then knows when a request
    goes without them (and must be refused) and when it carries them."""
    config = schemathesis.Config.from_dict(
        {
            "auth": {
                "openapi": {
                    "sessionCookie": {"api_key": account.session},
                    "csrf": {"api_key": account.csrf},
                    "ingestToken": {"bearer": ingest_token(SECRET_KEY, account.conversation_id)},
                }
            },
            # A cursor is opaque: one the server did not make is refused (400), however well-formed.
            "operations": [
                {
                    "include-name": "GET /api/users/sessions",
                    "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "400"]}},
                }
            ],
        }
    )
    schema = schemathesis.openapi.from_url(f"{app_server.url}/schema/openapi.json", config=config)
    schema.config.update(base_url=app_server.url)
    return schema


def aim_at_real_conversation(case: Case, account: Account) -> None:
    """The conversation's id where a random one could only be refused (ingest: always, since its token is for
    that conversation; elsewhere on every other example)."""
    real = next(account.turns) % 2 == 0
    if case.path == INGEST:
        case.path_parameters = {**(case.path_parameters or {}), "conversation_id": str(account.conversation_id)}
    elif case.path in WITH_SESSION_ID and real:
        case.path_parameters = {**(case.path_parameters or {}), "session_id": str(account.conversation_id)}
    elif case.path == SAVE and real and isinstance(case.body, dict) and "session_id" in case.body:
        case.body = {**case.body, "session_id": str(account.conversation_id)}


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
        takes_input = any(
            (operation.path_parameters, operation.query, operation.headers, operation.cookies, operation.body)
        )
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if takes_input else (GenerationMode.POSITIVE,):

            @FUZZ_SETTINGS
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Case) -> None:
                aim_at_real_conversation(case, account)
                # The CSRF middleware compares the header with this cookie; the rate limits key on the address.
                case.call_and_validate(
                    headers={"X-Forwarded-For": FUZZER_ADDRESS}, cookies={"csrftoken": account.csrf}, timeout=30
                )

            try:
                run()
            except (Exception, BaseExceptionGroup) as exc:  # schemathesis reports as a BaseExceptionGroup
                failures.append(f"{operation.label} ({mode.value}):\n{exc}")
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
