"""A local OpenAI-compatible chat-completions server speaking the real streaming wire format.

It answers `POST /v1/chat/completions` with `data: {chunk}` SSE lines, a usage chunk and `data: [DONE]`,
or with OpenAI's error JSON and status, as scripted per request; every request body is kept so tests
can assert on exactly what the model was sent.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from chatapp.agents.titles import INSTRUCTIONS as TITLE_INSTRUCTIONS

_ERRORS = {
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    429: ("Rate limit reached for requests.", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request.", "server_error", None),
}


@dataclass
class Reply:
    """One scripted answer: streamed `text` (in `pieces` chunks), or an error `status`."""

    text: str = ""
    status: int = 200
    first_token_delay: float = 0.0
    pieces: int = 4
    piece_delay: float = 0.005  # between chunks: raise it for a reply that streams long enough to interrupt


@dataclass
class FakeOpenAI:
    """The fake server's script and what it received."""

    script: list[Reply] = field(default_factory=list)
    # Scripts of their own for requests whose first (system) message starts with the key: a side request (a title)
    # then never takes an answer meant for the conversation, whatever order the two arrive in.
    # The app's title requests have one from the start: a test scripting the conversation's replies needs no
    # knowledge of when the app asks for a title (it answers "Okay." unless the test scripts titles).
    scripts_by_system: dict[str, list[Reply]] = field(default_factory=lambda: {TITLE_INSTRUCTIONS: []})
    requests: list[dict[str, Any]] = field(default_factory=list)
    base_url: str = ""

    def messages(self, index: int) -> list[tuple[str, str]]:
        """(role, content) of request `index`, as sent on the wire."""
        return [(m["role"], _content(m["content"])) for m in self.requests[index]["messages"]]

    def conversation_requests(self) -> list[dict[str, Any]]:
        """The requests `script` answered: the conversation's replies, without side requests (titles)."""
        return [body for body in self.requests if self._side_script(body) is None]

    def _side_script(self, body: dict[str, Any]) -> list[Reply] | None:
        messages = body.get("messages") or [{}]
        first = _content(messages[0].get("content", ""))
        return next((replies for prefix, replies in self.scripts_by_system.items() if first.startswith(prefix)), None)

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        replies = self._side_script(body)
        if replies is None:
            replies = self.script
        return replies.pop(0) if replies else Reply("Okay.")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        reply = self._next_reply(body)
        if reply.status != 200:
            message, kind, code = _ERRORS.get(reply.status, ("Error.", "server_error", None))
            error = {"error": {"message": message, "type": kind, "param": None, "code": code}}
            return web.json_response(error, status=reply.status)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        chunk_id, model = f"chatcmpl-{len(self.requests)}", body.get("model", "fake")

        async def send(delta: dict[str, Any], finish: str | None = None, usage: Any = None) -> None:
            choices = [] if usage else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
            chunk = {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": choices,
                "usage": usage,
            }
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        await asyncio.sleep(reply.first_token_delay)
        await send({"role": "assistant", "content": ""})
        size = max(1, -(-len(reply.text) // reply.pieces))
        try:
            for start in range(0, len(reply.text), size):
                await send({"content": reply.text[start : start + size]})
                await asyncio.sleep(reply.piece_delay)
        except ConnectionResetError:  # the client stopped reading (an interrupted reply): like OpenAI, stop
            return response
        await send({}, finish="stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20}
            await send({}, usage=usage)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def _content(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content)


@asynccontextmanager
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    """Serve a FakeOpenAI on a free local port in the running event loop for the duration of the block."""
    fake = FakeOpenAI()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake._handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    fake.base_url = f"http://127.0.0.1:{port}/v1"
    try:
        yield fake
    finally:
        await runner.cleanup()
