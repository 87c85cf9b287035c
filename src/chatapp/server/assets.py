"""Static files: versioned URLs (`?v=<hash of the file>`) that browsers may cache for a year, the favicon,
and response compression (never for the SSE stream, which must reach the browser event by event)."""

from __future__ import annotations

import hashlib
import importlib.util
from functools import cache
from urllib.parse import parse_qs

from litestar import Router, get
from litestar.config.compression import CompressionConfig
from litestar.datastructures import MutableScopeHeaders
from litestar.response import File
from litestar.static_files import create_static_files_router
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from chatapp.accounts.sessions import INGEST_PATH
from chatapp.core.paths import STATIC_DIR

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
STREAM_PATHS = r"^/conversations/[^/]+/stream"


@cache
def file_version(name: str) -> str:
    """A short hash of the file's bytes, read once per process: a changed file gets a new URL at start-up."""
    path = (STATIC_DIR / name).resolve()
    if not path.is_relative_to(STATIC_DIR.resolve()) or not path.is_file():
        return ""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def static_url(name: str) -> str:
    """`/static/<name>?v=<hash>` for templates; a missing file keeps its plain URL (and a 404)."""
    version = file_version(name)
    return f"/static/{name}?v={version}" if version else f"/static/{name}"


def versioned_cache(app: ASGIApp) -> ASGIApp:
    """A year of caching for a request that names the current version; everything else revalidates."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        name = scope["path"].removeprefix("/static/")
        requested = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("v", [""])[0]
        value = IMMUTABLE if requested and requested == file_version(name) else REVALIDATE

        async def send_with_cache(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 200:
                MutableScopeHeaders.from_message(message)["Cache-Control"] = value
            await send(message)

        await app(scope, receive, send_with_cache)

    return middleware


def static_router() -> Router:
    return create_static_files_router(
        path="/static", directories=[STATIC_DIR], include_in_schema=False, middleware=[versioned_cache]
    )


@get("/favicon.ico", include_in_schema=False, cache_control=None)
async def favicon() -> File:
    """Browsers ask for /favicon.ico whatever the page links; answer with the SVG icon."""
    return File(STATIC_DIR / "favicon.svg", media_type="image/svg+xml", content_disposition_type="inline")


def compression() -> CompressionConfig:
    """Brotli when the package is installed, else gzip; the event stream is left alone."""
    backend = "brotli" if importlib.util.find_spec("brotli") else "gzip"
    # gzip level 3 instead of Litestar's 9: every browser asks for gzip (the benches' client does not, so they
    # never see this cost), and the 20-row history fragment (32.7 KB) compresses in 0.044 ms instead of 0.128 ms
    # at level 6 and 0.24 ms at 9, to 2,792 bytes instead of 2,584 / 2,536 (timeit, this machine, 2026-12-08).
    # The agent's ingest API answers a few bytes of JSON: nothing to compress, on every POST.
    return CompressionConfig(backend=backend, exclude=[STREAM_PATHS, INGEST_PATH], gzip_compress_level=3)
