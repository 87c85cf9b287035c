"""The OpenAPI schema at /schema: the JSON API only, described as it really answers.

Only the JSON routes are in it (/api/..., /healthz, /livekit/token): the HTML pages and htmx fragments are
set `include_in_schema=False`, because their contract is the page itself (forms, redirects, toasts in an
HX-Trigger header), which no API client consumes and OpenAPI describes poorly.

Every JSON error is `{"detail", "status_code"}` (chatapp.accounts.web.http_error); `errors(...)` documents the ones a
route really gives, and the test suite fuzzes the schema against a real server (tests/integration/test_api_fuzz.py).
"""

from __future__ import annotations

import msgspec
from litestar._openapi.schema_generation import SchemaCreator
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.spec import Components, Schema, SecurityScheme
from litestar.typing import FieldDefinition

from chatapp.core.validation import CONTROL_CHARACTER_RANGES

# JSON Schema `pattern`s for text without the control characters chatapp.core.validation refuses, and for such
# text that is not blank either.
_ALLOWED = f"[^{CONTROL_CHARACTER_RANGES}]"
NO_CONTROL_CHARACTERS = f"^{_ALLOWED}*$"
NOT_BLANK = f"^{_ALLOWED}*[^\\s{CONTROL_CHARACTER_RANGES}]{_ALLOWED}*$"


class ErrorBody(msgspec.Struct):
    """What every JSON error looks like."""

    detail: str
    status_code: int


_WHY = {
    400: "Malformed request: a parameter or field of the wrong type or shape, or a JSON body that is not JSON.",
    401: "Not signed in (no or an expired session cookie), or no valid bearer token.",
    403: "The `x-csrftoken` header is missing or does not match the `csrftoken` cookie.",
    404: "No such conversation, or it is someone else's (answered the same, so it leaks nothing).",
    409: "The conversation was already saved.",
    410: "The conversation ended too long ago to take more events.",
    413: "Too much at once: the body or the number of items is over the limit the message names.",
    415: "The body is not `application/json`.",
    422: "A field breaks a rule the message names (text length or control characters, roles, times).",
    429: "Over a rate limit: wait for the `Retry-After` seconds.",
    503: "The database (or a service the route needs) is unavailable: retry after `Retry-After` seconds.",
}


def errors(*codes: int) -> dict[int, ResponseSpec]:
    """`responses=` for a route: the error statuses it can answer, each with the common error body."""
    return {
        code: ResponseSpec(data_container=ErrorBody, description=_WHY[code], generate_examples=False) for code in codes
    }


class StrictStructSchemaPlugin(StructSchemaPlugin):
    """Litestar's Struct schemas, plus `additionalProperties: false` for `forbid_unknown_fields` Structs, which
    answer an unknown field with 400: clients must learn that from the schema."""

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: SchemaCreator) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        if field_definition.type_.__struct_config__.forbid_unknown_fields:
            schema.additional_properties = False
        return schema


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="chatapp",
        version="0.1.0",
        path="/schema",
        # Litestar's session auth adds `sessionCookie` (the login session) and requires it by default.
        components=Components(
            security_schemes={
                "csrf": SecurityScheme(
                    type="apiKey",
                    name="x-csrftoken",
                    security_scheme_in="header",
                    description="State-changing calls: the value of the `csrftoken` cookie.",
                ),
                "ingestToken": SecurityScheme(
                    type="http", scheme="bearer", description="The conversation's token, handed to its agent."
                ),
            }
        ),
    )
