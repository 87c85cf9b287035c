"""LiveKit's webhook (room_finished ends the conversation) and fresh participant tokens for the browser."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import msgspec
from litestar import Controller, Request, Response, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException, NotFoundException

from chatapp.accounts.service import User
from chatapp.conversations import queries
from chatapp.conversations.agent_access import conversation_for_room
from chatapp.conversations.agent_runtime import AgentStartError
from chatapp.conversations.http import answered_as, conversation_gone
from chatapp.conversations.service import ConversationEnded, ConversationGone, ConversationService
from chatapp.core.openapi import errors
from chatapp.livekit.runtime import UNREACHABLE, LiveKitRuntime
from chatapp.livekit.webhook import InvalidWebhook, verify_webhook

log = logging.getLogger(__name__)


class TokenRequest(msgspec.Struct, forbid_unknown_fields=True):
    conversation_id: uuid.UUID


class TokenResponse(msgspec.Struct):
    url: str
    token: str


async def room_finished(service: ConversationService, room_name: str) -> bool:
    """End the room's conversation, if it is still active, as the idle reaper would (saved, or deleted when
    the user never spoke). True when it ended here; a conversation already ended (New Chat deleted the room)
    is left alone."""
    conversation_id = conversation_for_room(room_name)
    if conversation_id is None:
        return False
    conversation = await queries.get_conversation(conversation_id)
    if conversation is None or not conversation.active or conversation.room_name != room_name:
        return False  # ended already, or an earlier period's room (the conversation was reopened since)
    result = await service.end(conversation.owner, conversation_id, "room_finished")
    return result.outcome.changed


def webhook_rejected(request: Request[Any, Any, Any], exc: InvalidWebhook) -> Response[dict[str, Any]]:
    """Not from our LiveKit (or not readable): 401, logged with the reason, and nothing else happens."""
    log.warning("LiveKit webhook rejected: %s", exc)
    return Response({"detail": "Invalid webhook signature."}, status_code=401)


def webhook_text(body: bytes) -> str:
    try:
        return body.decode()
    except UnicodeDecodeError:
        raise InvalidWebhook("not UTF-8") from None


class LiveKitController(Controller):
    path = "/livekit"
    tags = ["voice"]
    exception_handlers = {
        InvalidWebhook: webhook_rejected,
        ConversationGone: conversation_gone,
        ConversationEnded: answered_as(409, "That conversation was saved."),
        AgentStartError: answered_as(503, lambda exc: getattr(exc, "detail", UNREACHABLE)),
    }

    # LiveKit's own signed callback, not an API of ours to describe.
    @post("/webhook", status_code=200, request_max_body_size=256 * 1024, include_in_schema=False)
    async def webhook(self, request: Request[Any, Any, Any], state: State) -> Response[dict[str, Any]]:
        """Outside session auth and CSRF: LiveKit authenticates with a JWT over the body's hash instead."""
        body = webhook_text(await request.body())
        event = verify_webhook(state.settings, body, request.headers.get("authorization", ""))
        ended = False
        if event.event == "room_finished":
            ended = await room_finished(state.conversations, event.room.name)
            if ended:
                log.info("conversation for LiveKit room %s ended: room_finished", event.room.name)
        return Response({"ok": True, "ended": ended})

    @post(
        "/token",
        status_code=200,
        summary="A fresh LiveKit participant token for the user's active conversation",
        security=[{"sessionCookie": [], "csrf": []}],
        responses=errors(400, 401, 403, 404, 409, 415, 503),
    )
    async def token(self, request: Request[User, Any, Any], state: State, data: TokenRequest) -> TokenResponse:
        """A fresh participant token for the user's active conversation (the one in the page may have expired)."""
        service: ConversationService = state.conversations
        runtime = service.agents.runtime
        if not isinstance(runtime, LiveKitRuntime):
            raise NotFoundException()
        user: User = request.user
        conversation = await service.owned_active(user.id, data.conversation_id)
        await runtime.forget_if_gone(conversation.id, conversation.room_name)  # a restarted server has no rooms
        if await service.ensure_agent(conversation, user.display_name) is None:
            raise HTTPException(status_code=503, detail=UNREACHABLE)
        info = runtime.join_info(conversation.room_name, str(user.id), user.display_name)
        return TokenResponse(url=info.livekit_url, token=info.participant_token)
