"""A newcomer's first look, as the README tells it: `router dev`, `router demo`, then the
README's curl opens bank 0001's breaker; the dev terminal shows what happened, not every request.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from router.demo import DEFAULT_ROUTER, DEFAULT_SERVICE
from router.devserver import is_routine
from tests.conftest import free_port
from tests.support import ROOT

UP_TIMEOUT_S = 60.0
STEP_TIMEOUT_S = 90
ROUTER_BIN = str(Path(sys.executable).with_name("router"))


@contextmanager
def router_dev(log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`router dev` with an embedded redis-server and no router settings of the test's."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REDIS_URL", "ROUTER_", "DD_", "BREAKERS_", "PORT"))
    }
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [ROUTER_BIN, "dev", "--port", str(free_port()), "--redis", "redis-server"],
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        try:
            yield proc
        finally:
            # SIGTERM: router dev stops its children by pid, then exits.
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def wait_for_text(log_path: Path, text: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        output = log_path.read_text(errors="replace")
        if text in output:
            return output
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not in the output within {timeout}s:\n{output[-3000:]}")


def welcome_url(output: str, label: str) -> str:
    match = re.search(rf"^\s*{label}\s+(http://127\.0\.0\.1:\d+)", output, re.MULTILINE)
    assert match, f"no {label} in the welcome:\n{output[-3000:]}"
    return match.group(1)


def readme_curl_block() -> str:
    readme = (ROOT / "README.md").read_text()
    marker = readme.index("<!-- readme-curl:")
    start = readme.index("```sh\n", marker) + len("```sh\n")
    return readme[start : readme.index("```", start)]


def shell(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT_S,
    )


def bank_0001(service: str) -> dict[str, object] | None:
    listed = httpx.get(f"{service}/breakers", timeout=5).json()["breakers"]
    return next((b for b in listed if b["name"] == "bank-charge" and b["key"] == "0001"), None)


def wait_state(service: str, state: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while (current := bank_0001(service)) is None or current["state"] != state:
        assert time.monotonic() < deadline, f"bank-charge 0001 is {current} after {timeout}s"
        time.sleep(0.1)


@pytest.mark.timeout(300)
def test_dev_demo_then_the_readme_curl_opens_bank_0001(tmp_path: Path) -> None:
    log_path = tmp_path / "dev.log"
    with router_dev(log_path):
        output = wait_for_text(log_path, "breaker-router is up.", UP_TIMEOUT_S)
        web = welcome_url(output, "router web")
        service = welcome_url(output, "example service")
        stub = welcome_url(output, "Datadog API stub")
        redis_url = re.search(r"export REDIS_URL=(\S+)\)", output).group(1)  # type: ignore[union-attr]

        demo = subprocess.run(
            [ROUTER_BIN, "demo", "--router", web, "--service", service, "--stub", stub],
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT_S,
        )
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "bank-charge 0001 closed" in demo.stdout

        # Posted as it is, the file's old alert loses to the demo's recovery, and says so.
        posted = shell(
            f"curl -sf -X POST {web}/webhooks/datadog -H 'Authorization: Bearer dev-token' "
            "-H 'Content-Type: application/json' "
            f"-d @<(sed 's#{DEFAULT_SERVICE}#{service}#' docs/examples/alert.json)"
        )
        assert posted.returncode == 0 and '"status":"queued"' in posted.stdout.replace(" ", "")
        wait_for_text(log_path, "ignored this alert", 15)
        assert bank_0001(service)["state"] == "closed"  # type: ignore[index]
        history = subprocess.run(
            [ROUTER_BIN, "breakers", "history", "bank-charge", "0001", "--json"],
            env={**os.environ, "REDIS_URL": redis_url},
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT_S,
        )
        [stale, *_] = json.loads(history.stdout)
        assert stale["action"] == "stale_open" and stale["version"] == 1_795_350_000_000
        assert stale["newer_source"].startswith("monitor:1001 event:")

        # The README's block, run as written (only the ports are this run's).
        block = readme_curl_block().replace(".venv/bin/router", ROUTER_BIN)
        block = block.replace(DEFAULT_ROUTER, web).replace(DEFAULT_SERVICE, service)
        block = block.replace("--print", f"--print --service {service}")
        # A person types the charge after the alert's answer; the delivery takes milliseconds.
        alert, charge = block.split(f"curl -s -X POST {service}/charges", 1)
        sent = shell(alert)
        assert sent.returncode == 0 and '"status":"queued"' in sent.stdout.replace(" ", "")
        wait_state(service, "open")
        charged = shell(f"curl -s -X POST {service}/charges{charge}")
        assert charged.returncode == 0, charged.stderr
        assert "bank 0001 is unavailable" in charged.stdout  # the 503's reason

        lines = log_path.read_text(errors="replace").splitlines()
        assert any("router.inbound" in line and " queued" in line for line in lines)
        assert any("router.worker" in line and "-> delivered (200)" in line for line in lines)
        assert any("breaker bank-charge 0001: closed -> open" in line for line in lines)
        # The demo polls the service's /breakers many times a second: none of it shows.
        assert not any("GET /breakers" in line or "HTTP Request:" in line for line in lines)


@pytest.mark.parametrize(
    ("line", "routine"),
    [
        (
            '2026-12-03 13:00:12,864 INFO werkzeug 127.0.0.1 - - "GET /breakers HTTP/1.1" 200 -',
            True,
        ),
        ("2026-12-03 13:00:12,882 INFO gunicorn.access [1] 127.0.0.1 POST /webhooks/datadog", True),
        ('2026-12-03 13:00:12,907 INFO httpx [1] HTTP Request: POST http://x "200 OK"', True),
        (" * Serving Flask app 'services_example.app'", True),
        ('{"level": "INFO", "logger": "gunicorn.access", "message": "GET /readyz"}', True),
        ('{"level": "ERROR", "logger": "werkzeug", "message": "Error on request"}', False),
        ("2026-12-03 13:00:12,864 ERROR werkzeug Error on request:", False),
        ("2026-12-03 13:00:12,877 INFO router.inbound [1] delivery=dlv_1 queued", False),
        ("2026-12-03 13:00:12,877 INFO breaker_client.receiver breaker x: closed -> open", False),
        ("Traceback (most recent call last):", False),
    ],
)
def test_dev_leaves_out_routine_lines_only(line: str, routine: bool) -> None:
    assert is_routine(line) is routine
