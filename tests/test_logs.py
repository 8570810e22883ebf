"""Log lines: JSON objects with the delivery's ids from real processes; text stays the default."""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import router.logs
from router.config import Settings
from router.errors import ConfigError
from router.logs import BufferedStreamHandler, JsonFormatter, TextFormatter
from tests.support import (
    process,
    router_command,
    router_env,
    running_receiver,
    wait_for,
)
from tests.test_processes import post_alert, web

IDS = {"delivery_id": "dlv_1", "monitor_id": "155844758", "event_id": "7411112233445566778"}


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a log file, each of which must be one JSON object."""
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def lines_about(path: Path, delivery_id: str) -> list[dict[str, Any]]:
    try:
        return [line for line in json_lines(path) if line.get("delivery_id") == delivery_id]
    except json.JSONDecodeError:
        return []  # a line still being written


def test_a_real_worker_and_web_log_json_lines_with_the_delivery_ids(
    redis_url, key_prefix, tmp_path
):
    with running_receiver() as receiver:
        receiver.script = [503]  # one retry, so several lines are about the same delivery
        env = router_env(
            redis_url, key_prefix, ROUTER_CALLBACK_ALLOW=receiver.url, ROUTER_LOG_FORMAT="json"
        )
        worker_log, web_log = tmp_path / "worker.log", tmp_path / "web.log"
        with (
            web(env, tmp_path) as base,
            process(router_command("worker"), env, log_path=worker_log),
        ):
            response = post_alert(base, f"{receiver.url}/breaker/callback")
            assert response.status_code == 202, response.text
            [delivery] = response.json()["deliveries"]
            wait_for(
                lambda: len(lines_about(worker_log, delivery["id"])) >= 2,
                timeout=15,
                what="two attempt lines in the worker's log",
            )
            wait_for(lambda: lines_about(web_log, delivery["id"]), what="the web's queued line")
    expected_ids = {
        "delivery_id": delivery["id"],
        "monitor_id": "155844758",
        "event_id": "7411112233445566778",
    }
    about = [*lines_about(worker_log, delivery["id"]), *lines_about(web_log, delivery["id"])]
    for line in about:
        assert {k: line[k] for k in expected_ids} == expected_ids, line
    first, second = lines_about(worker_log, delivery["id"])[:2]
    assert (first["outcome"], first["status"], first["attempt"]) == ("retry", 503, 1)
    assert (second["outcome"], second["status"], second["attempt"]) == ("delivered", 200, 2)
    assert first["level"] == "INFO" and first["logger"] == "router.worker"
    # Every line of both processes parses, gunicorn's own included.
    assert any(line["logger"].startswith("gunicorn") for line in json_lines(web_log))
    json_lines(worker_log)


def record(message: str = "attempt %d -> %s", *args: Any, **extra: Any) -> logging.LogRecord:
    made = logging.getLogger("router.worker").makeRecord(
        "router.worker", logging.WARNING, __file__, 1, message, args or (1, "retry"), None
    )
    made.__dict__.update(extra)
    return made


def test_json_lines_carry_extras_as_fields_and_tracebacks_in_a_field():
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        line = record(**IDS)
        line.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(line))
    assert entry["message"] == "attempt 1 -> retry"
    assert {k: entry[k] for k in IDS} == IDS
    assert entry["level"] == "WARNING"
    assert entry["exception"].startswith("Traceback") and "ValueError: boom" in entry["exception"]
    assert "\n" not in JsonFormatter().format(line)  # one object a line, traceback included


def test_text_lines_put_the_ids_ahead_of_the_message():
    text = TextFormatter().format(record(**IDS))
    assert text.endswith(
        "delivery=dlv_1 monitor=155844758 event=7411112233445566778 attempt 1 -> retry"
    )
    assert TextFormatter().format(record()).endswith("] attempt 1 -> retry")


def test_log_format_is_text_by_default_and_validated():
    assert Settings.from_env({}).log_format == "text"
    assert Settings.from_env({"ROUTER_LOG_FORMAT": "JSON"}).log_format == "json"
    with pytest.raises(ConfigError, match="ROUTER_LOG_FORMAT: expected 'text' or 'json'"):
        Settings.from_env({"ROUTER_LOG_FORMAT": "logfmt"})
    with pytest.raises(ConfigError, match="ROUTER_LOG_LEVEL"):
        Settings.from_env({"ROUTER_LOG_LEVEL": "loud"})


# -- BufferedStreamHandler: lines written off the logging thread ---------------------------------


def buffered_logger(stream: Any, name: str) -> tuple[logging.Logger, BufferedStreamHandler]:
    handler = BufferedStreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(f"tests.buffered.{name}")
    logger.handlers, logger.propagate, logger.level = [handler], False, logging.INFO
    return logger, handler


def test_lines_reach_the_stream_without_a_flush_each_thread_in_order():
    stream = io.StringIO()
    logger, handler = buffered_logger(stream, "threads")

    def log_lines(thread: int) -> None:
        for n in range(200):
            logger.info("thread %d line %d", thread, n)

    threads = [threading.Thread(target=log_lines, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    # No flush: the writer thread writes them within its interval.
    wait_for(lambda: stream.getvalue().count("\n") == 800, timeout=5, what="800 lines written")
    lines = stream.getvalue().splitlines()
    for t in range(4):
        mine = [line for line in lines if line.startswith(f"thread {t} ")]
        assert mine == [f"thread {t} line {n}" for n in range(200)]
    handler.close()


def test_flush_and_close_write_every_waiting_line_at_once(monkeypatch):
    monkeypatch.setattr("router.logs.WRITE_INTERVAL_S", 60.0)  # the writer would wait long
    stream = io.StringIO()
    logger, handler = buffered_logger(stream, "flush")
    logger.info("one")
    logger.info("two")
    handler.flush()
    assert stream.getvalue() == "one\ntwo\n"
    logger.info("three")
    handler.close()  # what logging.shutdown does at exit
    assert stream.getvalue() == "one\ntwo\nthree\n"


def test_a_stream_nobody_reads_blocks_the_caller_instead_of_filling_memory(monkeypatch):
    monkeypatch.setattr("router.logs.WRITE_INTERVAL_S", 60.0)
    monkeypatch.setattr("router.logs.MAX_PENDING_LINES", 3)
    stream = io.StringIO()
    logger, handler = buffered_logger(stream, "full")
    for n in range(4):
        logger.info("line %d", n)
    # The fourth line was over the limit: its caller wrote all four itself.
    assert stream.getvalue().splitlines() == [f"line {n}" for n in range(4)]
    handler.close()


def test_a_forked_child_writes_its_own_lines_and_not_the_parents_again(tmp_path, monkeypatch):
    monkeypatch.setattr("router.logs.WRITE_INTERVAL_S", 60.0)  # the parent's line stays waiting
    path = tmp_path / "forked.log"
    with path.open("a", buffering=1) as stream:
        logger, handler = buffered_logger(stream, "fork")
        logger.info("parent, before the fork")
        pid = os.fork()
        if pid == 0:  # the child: log, let its own writer write, leave without any flush
            try:
                router.logs.WRITE_INTERVAL_S = 0.05
                logger.info("child")
                time.sleep(0.5)
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        handler.close()
    lines = path.read_text().splitlines()
    assert sorted(lines) == ["child", "parent, before the fork"]


def test_the_writer_of_a_broken_stream_reports_it_and_keeps_logging(capsys):
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError("broken pipe")

    logger, handler = buffered_logger(Broken(), "broken")
    logger.info("lost")
    handler.flush()  # logging's handleError says so on stderr; nothing raises here
    assert "broken pipe" in capsys.readouterr().err
    logger.info("still accepted")
    handler.close()
