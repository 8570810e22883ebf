"""Log lines: plain text for a terminal, or one JSON object a line (`ROUTER_LOG_FORMAT=json`).

Lines about a delivery carry its ids as record fields, passed with `extra=delivery_fields(...)`:
the JSON formatter writes them as fields, the text formatter as `delivery=... monitor=...`
ahead of the message, so both formats name the same ids. Only entry points attach handlers
(`setup_logging` in the CLI, `dict_config` in `router.gunicorn_conf`); modules just log.
"""

from __future__ import annotations

import json
import logging
import logging.config
from datetime import UTC, datetime
from typing import Any

from router.config import LogFormat
from router.model import Notification

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"
# Ids shown ahead of a text line's message, in this order, under these short names.
CONTEXT_FIELDS = {
    "delivery_id": "delivery",
    "monitor_id": "monitor",
    "event_id": "event",
    "url": "url",
}
# Attributes every LogRecord has: whatever else a record holds came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


def delivery_fields(
    delivery_id: str, notification: Notification | None = None, **more: Any
) -> dict[str, Any]:
    """The `extra=` of a line about a delivery: its id, and its monitor and event when known."""
    fields: dict[str, Any] = {"delivery_id": delivery_id}
    if notification is not None:
        fields["monitor_id"] = notification.monitor_id
        fields["event_id"] = notification.event_id
    fields.update(more)
    return fields


def record_extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRIBUTES}


class JsonFormatter(logging.Formatter):
    """One JSON object per record; `extra=` fields become fields, a traceback `exception`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
            "thread": record.threadName,
        }
        for key, value in record_extras(record).items():
            if value is not None:
                entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: an extra that JSON cannot hold still shows, rather than losing the line.
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The classic line, with the delivery's ids (when given) ahead of the message."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        context = " ".join(
            f"{short}={getattr(record, name)}"
            for name, short in CONTEXT_FIELDS.items()
            if getattr(record, name, None) is not None
        )
        if not context:
            return super().formatMessage(record)
        # Right before the message, where `delivery=...` stood when it was part of the text.
        return TEXT_FORMAT % {**vars(record), "message": f"{context} {record.message}"}


def formatter(log_format: LogFormat) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def dict_config(log_format: LogFormat, level: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` for a process: everything to stderr in one format,
    gunicorn's own loggers included (they propagate to the root handler)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"router": {"()": f"{__name__}.formatter", "log_format": log_format}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "router",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            "gunicorn.error": {"handlers": [], "level": level, "propagate": True},
            "gunicorn.access": {"handlers": [], "level": "INFO", "propagate": True},
        },
    }


def setup_logging(log_format: LogFormat, level: str) -> None:
    """Attach the one handler of an entry point (replacing any it attached before)."""
    logging.config.dictConfig(dict_config(log_format, level))
