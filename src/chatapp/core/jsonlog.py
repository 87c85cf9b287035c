"""`CHATAPP_LOG_FORMAT=json`: one JSON object per line (time, level, logger, message, pid, then any extra
fields), for the app's loggers and uvicorn's, so a log shipper needs no parsing rules. The same redaction applies
as in text logs (logfilters): access paths are redacted before formatting and `lk.pii.*` fields are never written.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from chatapp.core.logfilters import PII_PREFIX

# What every LogRecord has; anything else on a record came from `extra=` and is written as a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
# uvicorn's duplicate of the message with terminal colours.
_SKIPPED = frozenset({"color_message"})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,  # which worker, with `chatapp serve --workers N`
        }
        entry.update(self.fields(record))
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in _SKIPPED and not key.startswith(PII_PREFIX) and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str, ensure_ascii=False)

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        return {}


class AccessJsonFormatter(JsonFormatter):
    """uvicorn's access records carry (client, method, path, http version, status) as args: fields of their own."""

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5:
            client, method, path, http_version, status = args
            return {"client": client, "method": method, "path": path, "http_version": http_version, "status": status}
        return {}
