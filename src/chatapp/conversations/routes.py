"""The chat page at `/`."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.response import Template

from chatapp.web import current_user


class ChatController(Controller):
    @get("/", name="chat")
    async def chat_page(self, request: Request[Any, Any, Any]) -> Template:
        return Template("chat.html", context={"user": current_user(request)})
