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
import os
import sys
import threading
import weakref
from collections import deque
from datetime import UTC, datetime
from typing import Any, TextIO

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


# How long a line waits, at most, for the writer thread (BufferedStreamHandler).
WRITE_INTERVAL_S = 0.05
# Past this many lines waiting, a caller writes them itself: a stream nobody reads (a full pipe)
# then blocks the caller, as a plain StreamHandler would, rather than filling memory.
MAX_PENDING_LINES = 10_000


class BufferedStreamHandler(logging.Handler):
    """A StreamHandler whose writes happen on a thread of their own, many lines per write.

    Why: logging.StreamHandler writes and flushes each line on the logging thread, under the
    handler's lock. A web process with many request threads then pays a system call per line,
    and each one hands the GIL to another thread and back: under load that cost more than the
    rest of a request's logging (bench/ingest_load.py). Here the caller only formats the line
    and appends it; the writer thread writes what accumulated every WRITE_INTERVAL_S. Lines
    keep their order. `flush()` (called by logging.shutdown at exit, and by `flush_handlers`
    before an `os._exit`) writes everything waiting; a process killed hard loses at most the
    last WRITE_INTERVAL_S of lines. After a fork, the child starts a writer of its own and does not
    write the parent's waiting lines again.
    """

    terminator = "\n"

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self.stream = stream if stream is not None else sys.stderr
        self._pending: deque[str] = deque()
        self._write_lock = threading.RLock()  # a signal handler may log mid-write
        self._wake = threading.Event()
        self._writer_pid: int | None = None
        self._closed = False
        _BUFFERED.add(self)

    def after_fork(self) -> None:
        self._pending.clear()  # the parent writes them
        self._write_lock = threading.RLock()
        self._wake = threading.Event()
        self._writer_pid = None

    def handle(self, record: logging.LogRecord) -> bool:
        # No handler lock: appending to a deque is atomic, and the writer has a lock of its own.
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._pending.append(self.format(record) + self.terminator)
        except Exception:
            self.handleError(record)
            return
        if self._writer_pid != os.getpid():
            self._start_writer()
        if len(self._pending) > MAX_PENDING_LINES:
            self.flush()

    def _start_writer(self) -> None:
        with self._write_lock:
            if self._writer_pid == os.getpid() or self._closed:
                return
            self._writer_pid = os.getpid()
        threading.Thread(target=self._write_forever, name="log-writer", daemon=True).start()

    def _write_forever(self) -> None:
        while not self._closed:
            self._wake.wait(WRITE_INTERVAL_S)
            self.flush()

    def flush(self) -> None:
        with self._write_lock:
            lines = []
            pending = self._pending
            while pending:
                lines.append(pending.popleft())
            if not lines:
                return
            try:
                self.stream.write("".join(lines))
                self.stream.flush()
            except Exception:  # a closed or broken stream: say so as logging does, then go on
                self.handleError(logging.makeLogRecord({"msg": "".join(lines)}))

    def close(self) -> None:
        self.flush()
        self._closed = True
        self._wake.set()
        super().close()


_BUFFERED: weakref.WeakSet[BufferedStreamHandler] = weakref.WeakSet()


def _before_fork() -> None:
    # A fork in the middle of a write would leave the child a stream locked by a thread it
    # does not have: no write runs while the process forks.
    for handler in list(_BUFFERED):
        handler._write_lock.acquire()


def _after_fork_in_parent() -> None:
    for handler in list(_BUFFERED):
        handler._write_lock.release()


def _after_fork_in_child() -> None:
    for handler in list(_BUFFERED):
        handler.after_fork()


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
)


def formatter(log_format: LogFormat) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def dict_config(log_format: LogFormat, level: str, *, buffered: bool = False) -> dict[str, Any]:
    """A `logging.config.dictConfig` for a process: everything to stderr in one format,
    gunicorn's own loggers included (they propagate to the root handler). `buffered` for a
    long-running process with many threads (the web, the worker): see BufferedStreamHandler.
    A short command keeps the plain handler, so its lines and its own stderr stay in order."""
    handler: dict[str, Any] = (
        {"()": f"{__name__}.BufferedStreamHandler"}
        if buffered
        else {"class": "logging.StreamHandler"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"router": {"()": f"{__name__}.formatter", "log_format": log_format}},
        "handlers": {
            "stderr": {**handler, "formatter": "router", "stream": "ext://sys.stderr"},
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            "gunicorn.error": {"handlers": [], "level": level, "propagate": True},
            "gunicorn.access": {"handlers": [], "level": "INFO", "propagate": True},
        },
    }


def flush_handlers() -> None:
    """Write every waiting line now: before `os._exit`, which skips logging's own flush."""
    for handler in logging.getLogger().handlers:
        handler.flush()


def skip_caller_lookup() -> None:
    """No record looks up the file and line it was logged from: neither format shows them, and
    the lookup walks the stack on every line (the logging HOWTO's "Optimization" section)."""
    logging._srcfile = None


def setup_logging(log_format: LogFormat, level: str, *, buffered: bool = False) -> None:
    """Attach the one handler of an entry point (replacing any it attached before)."""
    logging.config.dictConfig(dict_config(log_format, level, buffered=buffered))
    if buffered:
        skip_caller_lookup()
