"""Logs without secrets: what people search for, share tokens and transcript text never reach a log line.

- uvicorn's access log prints each request's full path: `/history?q=<search words>` and `/s/<share token>`.
  `uvicorn_log_config()` is uvicorn's own logging config plus `AccessLogRedactor` on the access handler, so
  every query value and share token is replaced (also in worker processes uvicorn spawns, which re-apply it).
- livekit-agents logs what people say at DEBUG (`received user transcript`, with the text in `lk.pii.*`
  extras). `keep_transcripts_out()` holds its loggers at INFO whatever the app's level, and strips every
  `lk.pii.*` field from records on the root handlers, so even a JSON formatter has nothing to print.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode

REDACTED = "<redacted>"
_SHARE = re.compile(r"^/s/[^/?#]+")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")
PII_PREFIX = "lk.pii."
# livekit-agents and its plugins; their DEBUG records may carry what was said.
TRANSCRIPT_LOGGERS = ("livekit", "livekit.agents", "livekit.plugins")


def redact_path(path: str) -> str:
    """`/history?q=lisbon&cursor=x` -> `/history?q=<redacted>&cursor=<redacted>`; `/s/<token>` -> `/s/<redacted>`."""
    path, sep, query = path.partition("?")
    path = _SHARE.sub("/s/" + REDACTED, path)
    if not sep:
        return path
    names = [name for name, _ in parse_qsl(query, keep_blank_values=True)]
    if not names or not all(_NAME.fullmatch(name) for name in names):  # odd names could be the secret
        return f"{path}?{REDACTED}" if query else path
    return f"{path}?{urlencode([(name, REDACTED) for name in names], safe='<>')}"


class AccessLogRedactor(logging.Filter):
    """For uvicorn's access logger, whose args are (client, method, path, http version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact_path(args[2]), *args[3:])
        return True


def uvicorn_log_config(log_format: str = "text") -> dict[str, Any]:
    """uvicorn's default logging config with the access log redacted; `json`: one JSON object per line."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["chatapp_redact"] = {"()": f"{__name__}.AccessLogRedactor"}
    config["handlers"]["access"].setdefault("filters", []).append("chatapp_redact")
    if log_format == "json":
        config["formatters"] = {
            "default": {"()": "chatapp.core.jsonlog.JsonFormatter"},
            "access": {"()": "chatapp.core.jsonlog.AccessJsonFormatter"},
        }
    return config


class DropTranscriptFields(logging.Filter):
    """Removes `lk.pii.*` extras (transcripts, chat context, identities) from a record before it is written."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key in [key for key in vars(record) if key.startswith(PII_PREFIX)]:
            delattr(record, key)
        return True


def keep_transcripts_out(level: int | str) -> None:
    """Cap the livekit loggers at INFO (they are DEBUG only when the app's `level` is) and filter the root handlers.

    Job processes copy these logger levels from the worker and send their records back to its handlers,
    so this, done once in the worker process, covers them too."""
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    floor = max(logging.INFO, numeric if isinstance(numeric, int) else logging.INFO)
    for name in TRANSCRIPT_LOGGERS:
        logging.getLogger(name).setLevel(floor)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, DropTranscriptFields) for f in handler.filters):
            handler.addFilter(DropTranscriptFields())
