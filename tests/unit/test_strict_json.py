"""StrictJson: a JSON body decoded once, strictly, straight from its bytes into the handler's Struct (the ingest
API's, issue 25), with the answers and the OpenAPI schema a plain `data: Struct` had."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import pytest
from litestar import Litestar, Request, post
from litestar.testing import TestClient

from chatapp.core.openapi import StrictStructSchemaPlugin
from chatapp.core.validation import StrictJson, StrictRequest, strict_body

# The app's style for `data` (a plain annotation); Litestar 2 notes it will want a body marker in 3.0.
pytestmark = pytest.mark.filterwarnings("ignore::litestar.exceptions.LitestarDeprecationWarning")
JSON = "application/json"
OK = b'{"items": [{"name": "a", "final": true}]}'


class Item(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(max_length=5)]
    final: bool


class Batch(msgspec.Struct, forbid_unknown_fields=True):
    items: Annotated[list[Item], msgspec.Meta(min_length=1)]


@post("/strict", dto=StrictJson[Batch], return_dto=None, status_code=200)
async def strict(data: Batch) -> dict[str, Any]:
    return {"names": [item.name for item in data.items]}


@post("/plain", status_code=200)
async def plain(request: Request[Any, Any, Any], data: Batch) -> dict[str, Any]:
    data = strict_body(await request.json(), Batch)
    return {"names": [item.name for item in data.items]}


def app() -> Litestar:
    return Litestar([strict, plain], request_class=StrictRequest, plugins=[StrictStructSchemaPlugin()], debug=False)


def test_the_body_is_decoded_from_its_bytes_without_the_json_step(monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[str] = []
    real_json = StrictRequest.json

    async def counting_json(self: StrictRequest) -> Any:
        decoded.append(self.url.path)
        return await real_json(self)

    monkeypatch.setattr(StrictRequest, "json", counting_json)
    body = b'{"items": [{"name": "a", "final": true}, {"name": "b", "final": false}]}'
    with TestClient(app()) as client:
        for path in ("/strict", "/plain"):
            response = client.post(path, content=body, headers={"Content-Type": "application/json"})
            assert response.status_code == 200, response.text
            assert response.json() == {"names": ["a", "b"]}
    assert "/plain" in decoded  # a plain `data: Struct` is decoded to Python objects first, then converted
    assert "/strict" not in decoded


@pytest.mark.parametrize(
    ("body", "content_type", "status", "detail"),
    [
        (OK.replace(b"true", b'"1"'), JSON, 400, "Invalid body: Expected `bool`, got `str` - at `$.items[0].final`"),
        (
            OK.replace(b'"a"', b'"abcdef"'),
            JSON,
            400,
            "Invalid body: Expected `str` of length <= 5 - at `$.items[0].name`",
        ),
        (b'{"items": []}', JSON, 400, "Invalid body: Expected `array` of length >= 1 - at `$.items`"),
        (OK[:-1] + b', "x": 1}', JSON, 400, "Invalid body: Object contains unknown field `x`"),
        (b'{"items": [', JSON, 400, "Input data was truncated"),
        (b'{"items": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", JSON, 400, "The JSON body is nested too deeply."),
        (OK, "text/plain", 415, "Send application/json."),
    ],
    ids=["lenient type", "constraint", "empty list", "unknown field", "not JSON", "nested too deeply", "not JSON type"],
)  # fmt: skip
def test_a_bad_body_is_answered_as_before(body: bytes, content_type: str, status: int, detail: str) -> None:
    with TestClient(app()) as client:
        response = client.post("/strict", content=body, headers={"Content-Type": content_type})
    assert (response.status_code, response.json()["detail"]) == (status, detail)


def test_the_openapi_request_body_is_the_structs_own() -> None:
    schema = app().openapi_schema.to_schema()
    strict_body_schema = schema["paths"]["/strict"]["post"]["requestBody"]
    plain_body_schema = schema["paths"]["/plain"]["post"]["requestBody"]
    assert strict_body_schema == plain_body_schema
    assert strict_body_schema["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Batch"}
    assert schema["components"]["schemas"]["Batch"]["additionalProperties"] is False
