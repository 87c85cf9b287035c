"""What the app accepts from clients, in one place, so every input follows the same rules.

- Text holds no control characters other than newline, carriage return and tab: PostgreSQL refuses NUL in
  text (a 500 before), and the others are invisible, break terminals and logs, or fake search highlights.
- Times must be representable in UTC (Python's and so asyncpg's range is years 1 to 9999).
- JSON bodies must be `application/json` and nested at most about a thousand levels deep (msgspec's limit,
  Python's recursion limit); form bodies must be URL-encoded UTF-8 (the `form_body` guard).
"""

from __future__ import annotations

from collections.abc import Generator
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import parse_qsl

import msgspec
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.dto import AbstractDTO, DTOFieldDefinition
from litestar.enums import RequestEncodingType
from litestar.exceptions import ClientException, HTTPException
from litestar.handlers import BaseRouteHandler
from litestar.plugins.htmx import HTMXRequest
from litestar.status_codes import HTTP_415_UNSUPPORTED_MEDIA_TYPE, HTTP_422_UNPROCESSABLE_ENTITY
from litestar.typing import FieldDefinition

# The rules themselves live without Litestar (an import's parser process loads only them); named here as before.
from chatapp.core.text_rules import CONTROL_CHARACTER_RANGES as CONTROL_CHARACTER_RANGES
from chatapp.core.text_rules import as_utc as as_utc
from chatapp.core.text_rules import has_control_characters as has_control_characters

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator
    from litestar.dto._backend import DTOBackend
    from litestar.openapi.spec import Reference, Schema

T = TypeVar("T")


class InvalidInput(HTTPException):
    """A value the client sent breaks one of the rules above; the message names the field."""

    status_code = HTTP_422_UNPROCESSABLE_ENTITY


def control_character_message(field: str) -> str:
    return f"{field} must not contain control characters."


def checked_text(text: str, field: str, max_length: int | None = None) -> str:
    """`text` unchanged, or InvalidInput (422) naming `field` (control characters, or longer than `max_length`:
    a 422, not msgspec's 400, so the agent forwarder splits the batch and drops only that event)."""
    if has_control_characters(text):
        raise InvalidInput(detail=control_character_message(field))
    if max_length is not None and len(text) > max_length:
        raise InvalidInput(detail=f"{field} is longer than {max_length:,} characters.")
    return text


def checked_timestamp(value: datetime, field: str) -> datetime:
    """`value` in UTC, or InvalidInput (422) naming `field`."""
    try:
        return as_utc(value)
    except (OverflowError, ValueError):
        raise InvalidInput(detail=f"{field} is out of range (years 1 to 9999 in UTC).") from None


def strict_body(value: Any, type_: type[T]) -> T:
    """`value` (a handler's decoded JSON body) as `type_` under JSON's own types, or a 400.

    Litestar converts request data leniently, as it must for query strings: a body's `"final": "1"` passed as
    true and `"timestamp": 0` as 1970. A JSON API takes only the types its schema documents.
    """
    try:
        return msgspec.convert(value, type_, strict=True)
    except msgspec.ValidationError as exc:
        raise ClientException(detail=f"Invalid body: {exc}") from None


def require_json(connection: Request[Any, Any, Any]) -> None:
    """A JSON body must say it is JSON, else 415."""
    media_type, _ = connection.content_type
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise ClientException(status_code=HTTP_415_UNSUPPORTED_MEDIA_TYPE, detail="Send application/json.")


def decode_json(body: bytes) -> Any:
    """The body's JSON, or a 400 (not JSON; nested deeper than msgspec can go: a RecursionError, which was a 500)."""
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise ClientException(detail=str(exc)) from None
    except RecursionError:
        raise ClientException(detail="The JSON body is nested too deeply.") from None


class StrictRequest(HTMXRequest):
    """The app's request class: a JSON body must say it is JSON and be nested at most ~1000 levels deep
    (msgspec stops at Python's recursion limit with a RecursionError, which was a 500)."""

    async def json(self) -> Any:
        require_json(self)
        try:
            return await super().json()
        except RecursionError:
            raise ClientException(detail="The JSON body is nested too deeply.") from None


class StrictJson(AbstractDTO[T]):
    """A handler's `dto=StrictJson[Model]`: its JSON body decoded from the raw bytes straight into `Model` (a
    msgspec Struct), strictly (JSON's own types, as strict_body) and in one pass; the OpenAPI schema is the
    Struct's, as without it.

    Without it Litestar decodes the body to Python objects, converts them leniently, and strict_body converts
    them again: three passes over an ingest POST's events. A body that fails is answered as before: 415 unless
    it says it is JSON, then 400 naming what is wrong (not JSON, nested too deeply, or the field).
    """

    def decode_bytes(self, value: bytes) -> T:
        require_json(cast("Request[Any, Any, Any]", self.asgi_connection))  # the body's DTO: a request's
        try:
            return msgspec.json.decode(value, type=self.model_type, strict=True)
        except (msgspec.ValidationError, msgspec.DecodeError):
            # The rare bad body: decoded again, step by step, for the same answers as any other JSON API's.
            return strict_body(decode_json(value), self.model_type)

    def decode_builtins(self, value: dict[str, Any]) -> T:
        return strict_body(value, self.model_type)

    @classmethod
    def create_for_field_definition(
        cls, field_definition: FieldDefinition, handler_id: str, backend_cls: type[DTOBackend] | None = None
    ) -> None:
        """Nothing to build: msgspec decodes the Struct itself."""

    @classmethod
    def create_openapi_schema(
        cls, field_definition: FieldDefinition, handler_id: str, schema_creator: SchemaCreator
    ) -> Reference | Schema:
        return schema_creator.for_field_definition(field_definition)

    @classmethod
    def generate_field_definitions(cls, model_type: type[Any]) -> Generator[DTOFieldDefinition, None, None]:
        yield from ()

    @classmethod
    def detect_nested_field(cls, field_definition: FieldDefinition) -> bool:
        return False


async def form_body(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard for handlers that read a URL-encoded form (every form the app's pages send): that media type
    only, in UTF-8 only.

    Litestar parses whatever arrives as URL-encoded (a JSON or multipart body as an empty or garbled form,
    invalid UTF-8 as replacement or Latin-1 characters), so a handler would act on data never meant.
    """
    if not isinstance(connection, Request) or not (body := await connection.body()):
        return  # an empty body is an empty form, whatever it is labelled
    media_type, _options = connection.content_type
    if media_type != RequestEncodingType.URL_ENCODED:
        raise ClientException(
            status_code=HTTP_415_UNSUPPORTED_MEDIA_TYPE, detail="Send application/x-www-form-urlencoded."
        )
    try:
        parse_qsl(body.decode(), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise ClientException(detail="The form is not valid UTF-8.") from None


FORM_ONLY = [form_body]
