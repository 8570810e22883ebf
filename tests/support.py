"""Test helpers: a scriptable callback receiver, bounded waits, processes stopped by pid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import httpx

ROOT = Path(__file__).resolve().parent.parent
SIGNING_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # test-only, 24 bytes
INBOUND_TOKEN = "test-inbound-token-0123456789"


def wait_for(
    predicate: Callable[[], Any], *, timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> Any:
    """Poll until `predicate()` is truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1 that records requests and answers from a script."""

    server: ThreadingHTTPServer
    requests: list[Received] = field(default_factory=list)
    # Statuses to answer in order; when exhausted, `default_status`.
    script: list[int | tuple[int, Mapping[str, str]]] = field(default_factory=list)
    default_status: int = 200
    delay_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def respond(self) -> tuple[int, Mapping[str, str]]:
        with self.lock:
            step = self.script.pop(0) if self.script else self.default_status
        return step if isinstance(step, tuple) else (step, {})

    def record(self, received: Received) -> None:
        with self.lock:
            self.requests.append(received)

    def webhook_ids(self) -> set[str]:
        """The `webhook-id` of every request received so far."""
        with self.lock:
            return {request.headers["webhook-id"] for request in self.requests}


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            receiver.record(
                Received(
                    self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time()
                )
            )
            if receiver.delay_s:
                time.sleep(receiver.delay_s)
            status, headers = receiver.respond()
            payload = json.dumps({"status": status}).encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        # A heartbeat check-in (ROUTER_HEARTBEAT_URL) is a GET: recorded and answered alike.
        do_GET = do_POST

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def _serving(server: ThreadingHTTPServer) -> Iterator[None]:
    """Serve on a daemon thread until the block ends."""
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def running_receiver() -> Iterator[Receiver]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    receiver = Receiver(server)
    server.RequestHandlerClass = _handler(receiver)
    with _serving(server):
        yield receiver


def router_env(redis_url: str, key_prefix: str, **extra: str) -> dict[str, str]:
    """A complete environment for a router process under test."""
    env = {
        "REDIS_URL": redis_url,
        "ROUTER_KEY_PREFIX": key_prefix,
        "ROUTER_INBOUND_TOKEN": INBOUND_TOKEN,
        "ROUTER_SIGNING_SECRET": SIGNING_SECRET,
        "ROUTER_CALLBACK_ALLOW": "http://127.0.0.1",
        "ROUTER_RETRY_SCHEDULE": "100ms,100ms,100ms",
    }
    env.update(extra)
    return env


@contextmanager
def process(
    args: list[str], env: Mapping[str, str], *, log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a child process; always stopped by pid (SIGTERM, then SIGKILL) when the block ends."""
    full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            args, env=full_env, stdout=log_file, stderr=subprocess.STDOUT, cwd=ROOT
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)


def router_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "router", *args]


def wait_http(url: str, *, timeout: float = 15.0) -> None:
    def up() -> bool:
        try:
            return httpx.get(url, timeout=1).status_code < 500
        except httpx.HTTPError:
            return False

    wait_for(up, timeout=timeout, what=f"{url} to answer")


# How a trickling receiver answers one request: the whole answer one byte at a time from its
# status line, or the status line and headers at once and then the body one byte at a time.
TrickleMode = Literal["headers", "body"]
TRICKLED_BODY = b"x" * 100  # shorter than the excerpt cap, so only a deadline can end the read


@dataclass
class TricklingReceiver:
    """A callback that trickles its first answers byte by byte, then answers 200 at once."""

    server: ThreadingHTTPServer
    script: list[TrickleMode] = field(default_factory=list)
    interval_s: float = 0.25
    body_status: int = 500  # the status of a "body" trickle
    requests: list[Received] = field(default_factory=list)
    # Statuses of the answers sent completely; an abandoned trickle never gets here.
    completed: list[int] = field(default_factory=list)
    stopped: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"


def _head(status: int, body: bytes) -> bytes:
    return (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: text/plain\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode()


def _trickling_handler(receiver: TricklingReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            with receiver.lock:
                receiver.requests.append(Received(self.path, headers, body, time.time()))
                mode = receiver.script.pop(0) if receiver.script else None
            self.close_connection = True
            # What goes out at once and what goes out one byte per interval.
            if mode is None:
                status, fast, slow = 200, _head(200, b"ok") + b"ok", b""
            elif mode == "headers":
                status, fast = 503, b""
                slow = _head(503, b"busy") + b"busy"
            else:
                status, slow = receiver.body_status, TRICKLED_BODY
                fast = _head(status, TRICKLED_BODY)
            try:
                self.wfile.write(fast)
                for index in range(len(slow)):
                    if receiver.stopped.wait(receiver.interval_s):
                        return
                    self.wfile.write(slow[index : index + 1])
            except OSError:
                return  # the client gave up on the answer: exactly what a deadline does
            with receiver.lock:
                receiver.completed.append(status)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def trickling_receiver(
    script: list[TrickleMode], *, interval_s: float = 0.25, body_status: int = 500
) -> Iterator[TricklingReceiver]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    receiver = TricklingReceiver(server, list(script), interval_s, body_status)
    server.RequestHandlerClass = _trickling_handler(receiver)
    with _serving(server):
        try:
            yield receiver
        finally:
            receiver.stopped.set()  # ends any trickle still going, so shutdown need not wait
