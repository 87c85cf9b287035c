"""The conversation service as handlers see it: injected with `Provide`, its domain errors answered once here.

Controllers add `dependencies=SERVICE` and `exception_handlers=PAGE_ERRORS` (or their own map) instead of
looking the service up in `state` and wrapping every call in the same try/except.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar import Request, Response
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException, NotFoundException
from litestar.plugins.htmx import ClientRefresh, Reswap
from litestar.types import ExceptionHandlersMap

from chatapp.accounts import web
from chatapp.conversations.service import (
    CannotRetry,
    ConversationEnded,
    ConversationGone,
    ConversationService,
    SaveFailed,
    TooManyStreams,
)
from chatapp.conversations.speech import AudioTooLong, BadAudio, NothingHeard, SpeechUnavailable

ENDED_MESSAGE = "That conversation was saved. Showing your current one."
SAVE_FAILED_MESSAGE = "Failed to save conversation. Please try again."


def conversation_service(state: State) -> ConversationService:
    """The app's one ConversationService (built in create_app, which keeps it in state)."""
    service: ConversationService = state.conversations
    return service


SERVICE = {"conversations": Provide(conversation_service, sync_to_thread=False)}


def conversation_gone(request: Request[Any, Any, Any], exc: ConversationGone) -> Response[Any]:
    """Unknown or another user's conversation: a plain 404, so its existence leaks nothing."""
    return web.not_found(request, NotFoundException())


def conversation_ended(request: Request[Any, Any, Any], exc: ConversationEnded) -> Response[Any]:
    """The tab is showing a conversation that was already saved: a 409 that reloads it onto the current one."""
    response = ClientRefresh()
    response.status_code = 409
    response.headers.update(web.toast_header(ENDED_MESSAGE, "info"))
    return response


def save_failed(request: Request[Any, Any, Any], exc: SaveFailed) -> Response[Any]:
    """New Chat's save failed and nothing changed: a 503 toast, and the panel stays as it is."""
    response: Response[Any] = Reswap(None, method="none", status_code=503)
    response.headers.update(web.toast_header(SAVE_FAILED_MESSAGE, "error"))
    return response


def answered_as(status_code: int, detail: str | Callable[[Exception], str] | None = None) -> Any:
    """An exception handler answering a domain error as this HTTP error, in the request's own format. The
    detail is `detail`, or made from the error by it, or else the error's own message."""

    def handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        said = detail(exc) if callable(detail) else detail or str(exc)
        return web.http_error(request, HTTPException(status_code=status_code, detail=said))

    return handler


# The browser routes of a live conversation.
PAGE_ERRORS: ExceptionHandlersMap = {ConversationGone: conversation_gone, ConversationEnded: conversation_ended}
# The chat page's own: New Chat's failed save, and a tab past the live-view cap.
CHAT_ERRORS: ExceptionHandlersMap = {
    **PAGE_ERRORS,
    SaveFailed: save_failed,
    TooManyStreams: answered_as(429),
    CannotRetry: answered_as(409),
    # Server dictation: a bad recording is the client's to fix (4xx); a failing speech service is ours (503).
    BadAudio: answered_as(422),
    AudioTooLong: answered_as(413),
    NothingHeard: answered_as(422),
    SpeechUnavailable: answered_as(503),
}
