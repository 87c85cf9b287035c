"""What the app accepts from clients, in one place, so every input follows the same rules.

- Text holds no control characters other than newline, carriage return and tab: PostgreSQL refuses NUL in
  text (a 500 before), and the others are invisible, break terminals and logs, or fake search highlights.
- Times must be representable in UTC (Python's and so asyncpg's range is years 1 to 9999).
- JSON bodies must be `application/json` and nested at most about a thousand levels deep (msgspec's limit,
  Python's recursion limit); form bodies must be URL-encoded UTF-8 (the `form_body` guard).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import msgspec
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.enums import RequestEncodingType
from litestar.exceptions import ClientException, HTTPException
from litestar.handlers import BaseRouteHandler
from litestar.plugins.htmx import HTMXRequest
from litestar.status_codes import HTTP_415_UNSUPPORTED_MEDIA_TYPE, HTTP_422_UNPROCESSABLE_ENTITY

# The rules themselves live without Litestar (an import's parser process loads only them); named here as before.
from chatapp.core.text_rules import CONTROL_CHARACTER_RANGES as CONTROL_CHARACTER_RANGES
from chatapp.core.text_rules import as_utc as as_utc
from chatapp.core.text_rules import has_control_characters as has_control_characters

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


class StrictRequest(HTMXRequest):
    """The app's request class: a JSON body must say it is JSON and be nested at most ~1000 levels deep
    (msgspec stops at Python's recursion limit with a RecursionError, which was a 500)."""

    async def json(self) -> Any:
        media_type, _ = self.content_type
        if media_type != "application/json" and not media_type.endswith("+json"):
            raise ClientException(status_code=HTTP_415_UNSUPPORTED_MEDIA_TYPE, detail="Send application/json.")
        try:
            return await super().json()
        except RecursionError:
            raise ClientException(detail="The JSON body is nested too deeply.") from None


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
