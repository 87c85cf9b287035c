"""The streams benchmark's baseline: the least an sse-starlette server can do per idle stream.

`uvicorn bench.sse_baseline:app`: `GET /stream` holds an EventSourceResponse open with the app's ping interval and
sends nothing else; `GET /healthz` answers JSON. Same uvicorn, same event loop and HTTP parser as `chatapp serve`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

PING_SECONDS = 15  # as chatapp's stream route


async def _idle() -> AsyncIterator[ServerSentEvent]:
    yield ServerSentEvent(data="hello", event="message")
    await asyncio.Event().wait()  # idle until the client goes away (sse-starlette cancels this)


async def stream(request: Request) -> EventSourceResponse:
    return EventSourceResponse(_idle(), ping=PING_SECONDS)


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


app = Starlette(routes=[Route("/stream", stream), Route("/healthz", healthz)])
