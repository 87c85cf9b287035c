"""Log redaction (uvicorn's access log, livekit-agents' transcripts in the worker) and the CSP's LiveKit origin."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from litestar import Litestar, get
from litestar.testing import TestClient

from chatapp.accounts import web
from chatapp.core.logfilters import AccessLogRedactor, redact_path, uvicorn_log_config
from chatapp.core.settings import Settings
from chatapp.livekit import worker
from chatapp.server.security import content_security_policy

BASE = {"CHATAPP_SECRET_KEY": "s" * 40, "CHATAPP_DATA_DIR": "/nonexistent"}
LIVEKIT = {"LIVEKIT_URL": "wss://example.livekit.cloud", "LIVEKIT_API_KEY": "k", "LIVEKIT_API_SECRET": "x" * 32}


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        ("/history?q=lisbon+honeymoon&cursor=abc", "/history?q=<redacted>&cursor=<redacted>"),
        ("/s/Zm9vYmFyc2VjcmV0dG9rZW4", "/s/<redacted>"),
        ("/s/tok?x=1", "/s/<redacted>?x=<redacted>"),
        ("/x?lisbon%20honeymoon", "/x?<redacted>"),
        ("/history", "/history"),
        ("/conversations/1/stream", "/conversations/1/stream"),
    ],
)
def test_access_log_paths_are_redacted(path: str, logged: str) -> None:
    assert redact_path(path) == logged


def test_uvicorns_access_handler_carries_the_redactor() -> None:
    config = uvicorn_log_config()
    name = config["handlers"]["access"]["filters"][0]
    assert config["filters"][name]["()"].endswith("AccessLogRedactor")
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        "",
        0,
        '%s - "%s %s HTTP/%s" %d',
        ("1.2.3.4:5", "GET", "/s/tok", "1.1", 200),
        None,
    )
    assert AccessLogRedactor().filter(record)
    assert record.getMessage() == '1.2.3.4:5 - "GET /s/<redacted> HTTP/1.1" 200'


def test_the_csp_lets_the_browser_reach_livekit_only_when_configured() -> None:
    assert "connect-src 'self';" in content_security_policy(Settings.from_env(BASE))
    policy = content_security_policy(Settings.from_env(BASE | LIVEKIT))
    assert "connect-src 'self' wss://example.livekit.cloud https://example.livekit.cloud;" in policy
    local = Settings.from_env(BASE | LIVEKIT | {"CHATAPP_LIVEKIT_BROWSER_URL": "http://localhost:7880"})
    assert "connect-src 'self' ws://localhost:7880 http://localhost:7880;" in content_security_policy(local)


class EverythingFormatter(logging.Formatter):
    """Like a JSON formatter: every field of the record, extras included."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.getMessage()} {vars(record)}"


@pytest.fixture
def root_log() -> Iterator[io.StringIO]:
    """The root handler `chatapp agent` installs (cli._setup_logging), writing to a buffer; restored after."""
    root = logging.getLogger()
    saved = (root.level, root.handlers[:], {n: logging.getLogger(n).level for n in ("livekit", "livekit.agents")})
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(EverythingFormatter())
    root.handlers = [handler]
    root.setLevel(logging.DEBUG)
    yield stream
    root.setLevel(saved[0])
    root.handlers = saved[1]
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)


def test_the_dev_worker_logs_no_transcripts_even_at_debug(
    root_log: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[bool] = []

    async def serve(server: object, dev: bool) -> int:
        ran.append(dev)
        return 0

    monkeypatch.setattr(worker, "_serve", serve)
    settings = Settings.from_env(BASE | LIVEKIT | {"CHATAPP_LOG_LEVEL": "debug"})
    assert worker.run_worker(settings, dev=True) == 0
    assert ran == [True]
    agents = logging.getLogger("livekit.agents")
    agents.debug("received user transcript", extra={"lk.pii.user_transcript": "my secret itinerary"})
    agents.info("session started", extra={"lk.pii.chat_ctx": "my secret itinerary", "room": "r"})
    logging.getLogger("chatapp.livekit.worker").debug("chatapp debug stays on")
    text = root_log.getvalue()
    assert "received user transcript" not in text
    assert "session started" in text
    assert "chatapp debug stays on" in text
    assert "my secret itinerary" not in text


def test_an_unhandled_error_on_a_share_page_logs_no_token(caplog: pytest.LogCaptureFixture) -> None:
    @get("/s/{token:str}")
    async def shared() -> None:
        raise RuntimeError("boom")

    app = Litestar([shared], exception_handlers={Exception: web.server_error}, logging_config=None)
    with TestClient(app) as client:
        response = client.get("/s/the-secret-share-token", headers={"accept": "application/json"})
    assert response.status_code == 500
    assert "unhandled RuntimeError on GET /s/<redacted>" in caplog.text
    assert "the-secret-share-token" not in caplog.text
