"""Log lines: JSON objects with the delivery's ids from real processes; text stays the default."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from router.config import Settings
from router.errors import ConfigError
from router.logs import JsonFormatter, TextFormatter
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
