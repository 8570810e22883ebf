"""`router dev`: the whole system on one machine, for a first look.

Starts, as children of one process: a Redis (the one in REDIS_URL, else a throwaway
`redis-server`, else fakeredis's embedded server), the Datadog API stub, the router web under
gunicorn, a worker, and the example service; prefixes their output; stops them all by pid.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import click
import httpx
import redis

from router import demo
from router.redis_check import WARNING_MARK

# Fixed where free, so the README's commands work as written; another port is chosen if not.
DEFAULT_WEB_PORT = 8000
DEFAULT_SERVICE_PORT = 8001
DEFAULT_STUB_PORT = 8002
# Not 6379, so a dev run never touches a Redis someone already uses.
DEFAULT_REDIS_PORT = 6390
DEV_INBOUND_TOKEN = "dev-token"
DEV_RAMP_WINDOW_S = "15"
STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
COLOURS = {"redis": "white", "stub": "blue", "web": "green", "worker": "yellow", "service": "cyan"}


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def pick_port(preferred: int) -> int:
    if port_is_free(preferred):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], what: str, timeout: float = STARTUP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise click.ClickException(f"{what} did not come up within {timeout:.0f}s")
        time.sleep(0.1)


def http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=1).status_code < 500
        except httpx.HTTPError:
            return False

    return check


def redis_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
        except redis.RedisError:
            return False

    return check


# Loggers whose routine lines (INFO and below) drown the ones a first look is about: every
# request's access line (the demo polls the service many times a second) and every HTTP call.
QUIET_LOGGERS = ("werkzeug", "gunicorn.access", "httpx")
_ROUTINE = re.compile(
    r"^\S+ \S+ (?:DEBUG|INFO) (?:" + "|".join(map(re.escape, QUIET_LOGGERS)) + r") "
)
# Flask's development-server banner, printed without a logger.
_BANNER = (" * Serving Flask app", " * Debug mode:", " * Running on")


def is_routine(line: str) -> bool:
    """True for a child's line `router dev` leaves out: access logs, HTTP calls, banners.

    What stays: each webhook received and queued (web), each delivery attempt (worker), each
    breaker change and ignored event (the service's callback helper), and every warning."""
    if line.startswith(_BANNER) or _ROUTINE.match(line):
        return True
    if line.startswith("{"):  # ROUTER_LOG_FORMAT=json
        try:
            entry = json.loads(line)
        except ValueError:
            return False
        return (
            isinstance(entry, dict)
            and entry.get("logger") in QUIET_LOGGERS
            and entry.get("level") in ("DEBUG", "INFO")
        )
    return False


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]


def _pump(child: Child, hide: tuple[str, ...] = ()) -> None:
    prefix = click.style(f"{child.name:>7} |", fg=COLOURS.get(child.name, "white"))
    assert child.proc.stdout is not None
    for raw in iter(child.proc.stdout.readline, b""):
        line = raw.decode(errors="replace").rstrip()
        if not is_routine(line) and not any(text in line for text in hide):
            click.echo(f"{prefix} {line}")


@contextmanager
def spawned(
    name: str, args: list[str], env: Mapping[str, str], *, hide: tuple[str, ...] = ()
) -> Iterator[Child]:
    """Run a child with prefixed output; stop it by pid (TERM, then KILL) on the way out."""
    proc = subprocess.Popen(
        args,
        env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    child = Child(name, proc)
    threading.Thread(target=_pump, args=(child, hide), daemon=True).start()
    try:
        yield child
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)


@contextmanager
def embedded_redis(stack: ExitStack, kind: str = "auto") -> Iterator[str]:
    """A throwaway Redis: `redis-server` if installed, else fakeredis's TCP server in-process."""
    port = pick_port(DEFAULT_REDIS_PORT)
    binary = shutil.which("redis-server") if kind != "fakeredis" else None
    if kind == "redis-server" and binary is None:
        raise click.ClickException("--redis redis-server: no redis-server on the PATH")
    if binary:
        workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="router-dev-"))
        args = [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            # Its start-up banner says nothing a first look needs; warnings still show.
            "--loglevel",
            "warning",
            "--dir",
            workdir,
        ]
        stack.enter_context(spawned("redis", args, {}))
        kind = f"redis-server on port {port}"
    else:
        try:
            from fakeredis import TcpFakeServer
        except ImportError as exc:
            raise click.ClickException(
                "no redis-server on the PATH and fakeredis is not installed: "
                "pip install 'breaker-router[embedded]', or set REDIS_URL"
            ) from exc
        server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
        threading.Thread(target=server.serve_forever, daemon=True).start()
        stack.callback(server.shutdown)
        kind = f"fakeredis's embedded server on port {port}"
    url = f"redis://127.0.0.1:{port}/0"
    wait_until(redis_ok(url), "the embedded Redis")
    click.secho(
        f"Redis: {kind}. It keeps nothing: stopping `router dev` forgets everything.", fg="magenta"
    )
    yield url


def web_command(port: int, *, workers: int = 2, app: str = "router.app:create_app()") -> list[str]:
    """The router web under gunicorn on 127.0.0.1:`port` (for dev, tests and benchmarks).

    `app` lets a benchmark serve its baseline under exactly the router's gunicorn settings."""
    return [
        sys.executable, "-m", "gunicorn",
        "--bind", f"127.0.0.1:{port}",
        "--workers", str(workers),
        "--graceful-timeout", "5",
        # gunicorn's control socket has one default path per user; two servers would fight.
        "--no-control-socket",
        # The router's log format (ROUTER_LOG_FORMAT) for gunicorn's lines and the app's.
        "--config", "python:router.gunicorn_conf",
        app,
    ]  # fmt: skip


def new_signing_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def run_dev(web_port: int | None = None, redis_kind: str = "auto") -> None:
    python = sys.executable
    # Its own readiness polls are not news either.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    with ExitStack() as stack:
        redis_url = os.environ.get("REDIS_URL") or stack.enter_context(
            embedded_redis(stack, redis_kind)
        )
        # The embedded Redis keeps nothing on purpose (the banner says so): not worth warning.
        hide = () if os.environ.get("REDIS_URL") else (WARNING_MARK,)
        web = pick_port(web_port or int(os.environ.get("PORT", DEFAULT_WEB_PORT)))
        service = pick_port(DEFAULT_SERVICE_PORT)
        stub = pick_port(DEFAULT_STUB_PORT)
        service_url = f"http://127.0.0.1:{service}"
        env = {
            "REDIS_URL": redis_url,
            "ROUTER_INBOUND_TOKEN": os.environ.get("ROUTER_INBOUND_TOKEN", DEV_INBOUND_TOKEN),
            "ROUTER_SIGNING_SECRET": os.environ.get("ROUTER_SIGNING_SECRET")
            or new_signing_secret(),
            "ROUTER_CALLBACK_ALLOW": f"{service_url}/",
            "DD_API_HOST": f"http://127.0.0.1:{stub}",
            "DD_API_KEY": "dev-api-key",
            "DD_APP_KEY": "dev-app-key",
        }
        children: list[Child] = []

        def start(name: str, args: list[str], extra: Mapping[str, str] | None = None) -> None:
            children.append(
                stack.enter_context(spawned(name, args, {**env, **(extra or {})}, hide=hide))
            )

        start("stub", [python, "-m", "router.datadog_stub", "--port", str(stub), "--demo"])
        # A short ramp, so `router demo` shows the breaker closing within its run.
        start(
            "service",
            [python, "-m", "services_example"],
            {"PORT": str(service), "BREAKER_RAMP_WINDOW": DEV_RAMP_WINDOW_S},
        )
        start("web", web_command(web))
        start("worker", [python, "-m", "router", "worker"])
        wait_until(http_ok(f"{env['DD_API_HOST']}/stub/health"), "the Datadog API stub")
        wait_until(http_ok(f"http://127.0.0.1:{web}/readyz"), "the router web")
        wait_until(http_ok(f"{service_url}/healthz"), "the example service")
        print_welcome(web, service_url, env)
        stopping = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stopping.set())
        while not stopping.wait(0.5):
            exited = next((c for c in children if c.proc.poll() is not None), None)
            if exited is not None:
                click.secho(
                    f"{exited.name} exited with code {exited.proc.returncode}; stopping everything",
                    fg="red",
                )
                break
        click.secho("Stopping…", fg="magenta")


def print_welcome(web: int, service_url: str, env: Mapping[str, str]) -> None:
    base = f"http://127.0.0.1:{web}"
    token = env["ROUTER_INBOUND_TOKEN"]
    # The commands' defaults are the usual ports; name only those that differ this time.
    stub = env["DD_API_HOST"]
    service_option = f" --service {service_url}" if service_url != demo.DEFAULT_SERVICE else ""
    where = (f" --router {base}" if base != demo.DEFAULT_ROUTER else "") + service_option
    where += f" --stub {stub}" if stub != demo.DEFAULT_STUB else ""
    if token != DEV_INBOUND_TOKEN:
        where += " --token $ROUTER_INBOUND_TOKEN"
    click.secho(
        f"""
breaker-router is up.
  router web       {base}   (health {base}/readyz, metrics {base}/metrics)
  example service  {service_url}   (callback {service_url}/breaker/callback)
  Datadog API stub {stub}
  inbound token    {token}
  Redis            {env["REDIS_URL"]}   (for the CLI: export REDIS_URL={env["REDIS_URL"]})

Try it, in another terminal:
  .venv/bin/router demo{where}
or step by step, a Datadog-shaped alert for bank 0001 (then `recovery`):
  .venv/bin/router send-example alert{where}
or the same with curl:
  .venv/bin/router send-example alert --print{service_option} | curl -s -X POST \\
    {base}/webhooks/datadog -H 'Authorization: Bearer {token}' \\
    -H 'Content-Type: application/json' -d @-
  curl -s -X POST {service_url}/charges -H 'Content-Type: application/json' \\
    -d '{{"bank_code": "0001", "amount": 100}}'
This terminal shows each notification received, each delivery and each breaker change.
Ctrl-C stops everything.
""",
        fg="magenta",
    )
