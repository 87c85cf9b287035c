"""CHATAPP_LOG_FORMAT=json: one parseable object per record, extras kept, transcripts and colours left out."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from chatapp.core.jsonlog import AccessJsonFormatter, JsonFormatter
from chatapp.core.logfilters import uvicorn_log_config
from chatapp.core.settings import Settings, SettingsError


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("chatapp.test", logging.WARNING, __file__, 1, msg, args or None, None)
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def test_a_record_is_one_json_line_with_its_extras_but_never_pii_fields() -> None:
    line = JsonFormatter().format(
        record("agent %s", "started", conversation_id="c-1", **{"lk.pii.transcript": "what was said"})
    )
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "warning"
    assert entry["logger"] == "chatapp.test"
    assert entry["message"] == "agent started"
    assert entry["conversation_id"] == "c-1"
    assert entry["time"].endswith("+00:00")
    assert isinstance(entry["pid"], int)
    assert "what was said" not in line


def test_exceptions_stay_inside_the_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        failed = record("failed")
        failed.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(failed))
    assert "ValueError: boom" in entry["exception"]


def test_access_lines_carry_their_fields_and_uvicorn_uses_the_json_formatters() -> None:
    access = record('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/healthz", "1.1", 200, color_message="x")
    entry = json.loads(AccessJsonFormatter().format(access))
    fields = (entry["method"], entry["path"], entry["status"], entry["client"])
    assert fields == ("GET", "/healthz", 200, "127.0.0.1:5000")
    assert "color_message" not in entry
    config = uvicorn_log_config("json")
    assert config["formatters"]["access"]["()"] == "chatapp.core.jsonlog.AccessJsonFormatter"
    assert "chatapp_redact" in config["handlers"]["access"]["filters"]  # still redacted before formatting


def test_the_log_format_setting_is_text_or_json() -> None:
    base = {"CHATAPP_SECRET_KEY": "x" * 40, "CHATAPP_DATA_DIR": "/nonexistent"}
    assert Settings.from_env(base).log_format == "text"
    assert Settings.from_env({**base, "CHATAPP_LOG_FORMAT": "JSON"}).log_format == "json"
    with pytest.raises(SettingsError, match="CHATAPP_LOG_FORMAT must be text or json"):
        Settings.from_env({**base, "CHATAPP_LOG_FORMAT": "xml"})
