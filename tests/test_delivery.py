"""One signed callback POST against a real HTTP receiver, and what its answer means."""

from __future__ import annotations

import json
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from router.delivery import (
    RESPONSE_EXCERPT_CHARS,
    USER_AGENT,
    AttemptResult,
    CallbackSender,
    classify_status,
)
from tests.conftest import free_port
from tests.sns_signing import make_signing_identity
from tests.support import (
    SIGNING_SECRET,
    Receiver,
    running_receiver,
    trickling_receiver,
    wait_for,
)

DELIVERY_ID = "dlv_0123456789abcdefghijklmnop"
PAYLOAD = {
    "delivery_id": DELIVERY_ID,
    "transition": "alert",
    "monitor": {"id": 42, "name": "Bank Zürich charges", "tags": ["bank_code:0001"]},
    "enrichment": "complete",
}
OTHER_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, "delivered"),
        (201, "delivered"),
        (202, "delivered"),
        (204, "delivered"),
        (299, "delivered"),
        (301, "permanent"),
        (302, "permanent"),
        (303, "permanent"),
        (307, "permanent"),
        (308, "permanent"),
        (400, "permanent"),
        (401, "permanent"),
        (403, "permanent"),
        (404, "permanent"),
        (405, "permanent"),
        (409, "permanent"),
        (410, "permanent"),
        (413, "permanent"),
        (422, "permanent"),
        (408, "retry"),
        (425, "retry"),
        (429, "retry"),
        (500, "retry"),
        (501, "retry"),
        (502, "retry"),
        (503, "retry"),
        (504, "retry"),
        (599, "retry"),
    ],
)
def test_classify_status(status, outcome):
    assert classify_status(status) == outcome


@pytest.fixture(scope="module")
def shared_receiver() -> Iterator[Receiver]:
    # One server for the module: stopping one takes half a second (its poll interval).
    with running_receiver() as running:
        yield running


@pytest.fixture
def receiver(shared_receiver: Receiver) -> Receiver:
    with shared_receiver.lock:
        shared_receiver.requests = []
        shared_receiver.script = []
        shared_receiver.default_status = 200
        shared_receiver.delay_s = 0.0
    return shared_receiver


@pytest.fixture
def sender() -> Iterator[CallbackSender]:
    callback_sender = CallbackSender(SIGNING_SECRET, timeout_s=0.3)
    yield callback_sender
    callback_sender.close()


def test_send_posts_a_compact_signed_json_body(receiver, sender):
    result = sender.send(DELIVERY_ID, receiver.url + "/breaker/callback", PAYLOAD)

    assert result.outcome == "delivered"
    assert (result.status, result.error, result.retry_after_s) == (200, None, None)
    assert result.response_excerpt is None  # only kept for failures
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request.path == "/breaker/callback"
    assert request.body == json.dumps(PAYLOAD, separators=(",", ":"), ensure_ascii=False).encode()
    assert b", " not in request.body and b": " not in request.body
    assert "Zürich".encode() in request.body  # UTF-8, not \u escapes
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == USER_AGENT
    assert request.headers["webhook-id"] == DELIVERY_ID
    assert request.headers["webhook-signature"].startswith("v1,")
    assert abs(int(request.headers["webhook-timestamp"]) - request.at) < 5
    assert Webhook(SIGNING_SECRET).verify(request.body, request.headers) == PAYLOAD


def test_the_signature_does_not_verify_with_another_secret_or_a_changed_body(receiver, sender):
    sender.send(DELIVERY_ID, receiver.url + "/cb", PAYLOAD)
    request = receiver.requests[0]
    with pytest.raises(WebhookVerificationError):
        Webhook(OTHER_SECRET).verify(request.body, request.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SIGNING_SECRET).verify(request.body.replace(b"alert", b"recovery"), request.headers)


def test_the_webhook_id_stays_the_same_across_attempts(receiver, sender):
    receiver.script = [503]
    first = sender.send(DELIVERY_ID, receiver.url + "/cb", PAYLOAD)
    second = sender.send(DELIVERY_ID, receiver.url + "/cb", PAYLOAD)
    assert (first.outcome, second.outcome) == ("retry", "delivered")
    assert [r.headers["webhook-id"] for r in receiver.requests] == [DELIVERY_ID, DELIVERY_ID]


def test_signed_headers_use_the_injected_clock():
    sender = CallbackSender(SIGNING_SECRET, timeout_s=1, clock=lambda: 1_700_000_000.75)
    try:
        headers = sender.signed_headers("dlv_x", '{"a":1}')
    finally:
        sender.close()
    assert headers["webhook-timestamp"] == "1700000000"
    assert headers["webhook-id"] == "dlv_x"
    assert headers["content-type"] == "application/json"
    signature = headers["webhook-signature"]
    assert signature.startswith("v1,") and len(signature) > len("v1,") + 40


@pytest.mark.parametrize(
    ("status", "outcome", "error"),
    [
        (204, "delivered", None),
        (404, "permanent", "HTTP 404"),
        (410, "permanent", "HTTP 410"),
        (408, "retry", "HTTP 408"),
        (429, "retry", "HTTP 429"),
        (500, "retry", "HTTP 500"),
        (503, "retry", "HTTP 503"),
    ],
)
def test_send_reports_the_outcome_of_each_status(receiver, sender, status, outcome, error):
    receiver.script = [status]
    result = sender.send(DELIVERY_ID, receiver.url + "/cb", PAYLOAD)
    assert (result.outcome, result.status, result.error) == (outcome, status, error)
    expected_excerpt = None if outcome == "delivered" else json.dumps({"status": status})
    assert result.response_excerpt == expected_excerpt
    assert len(receiver.requests) == 1


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_not_followed(receiver, sender, status):
    location = receiver.url + "/moved/here"
    receiver.script = [(status, {"Location": location})]
    result = sender.send(DELIVERY_ID, receiver.url + "/cb", PAYLOAD)
    assert len(receiver.requests) == 1
    assert receiver.requests[0].path == "/cb"
    assert result.outcome == "permanent"
    assert result.status == status
    assert result.error == (
        f"HTTP {status} redirect to {location} not followed; fix the callback URL"
    )


def test_a_redirect_without_location_still_says_what_happened(receiver, sender):
    receiver.script = [302]
    result = sender.send(DELIVERY_ID, receiver.url + "/cb", PAYLOAD)
    assert result.outcome == "permanent"
    assert result.error == "HTTP 302 redirect to ? not followed; fix the callback URL"


@pytest.mark.parametrize(
    ("status", "retry_after", "seconds"),
    [
        (503, "7", 7.0),
        (429, "120", 120.0),
        (429, "soon", None),
        (503, None, None),
    ],
)
def test_retry_after_is_parsed(receiver, sender, status, retry_after, seconds):
    receiver.script = [(status, {"Retry-After": retry_after} if retry_after else {})]
    result = sender.send(DELIVERY_ID, receiver.url + "/cb", PAYLOAD)
    assert result.outcome == "retry"
    assert result.retry_after_s == seconds


def test_a_unicode_digit_retry_after_does_not_crash_send(receiver, sender):
    receiver.script = [(503, {"Retry-After": "²"})]
    result = sender.send(DELIVERY_ID, receiver.url + "/cb", PAYLOAD)
    assert (result.outcome, result.retry_after_s) == ("retry", None)


@pytest.mark.parametrize(
    ("body", "excerpt"),
    [
        ("x" * 2000, "x" * RESPONSE_EXCERPT_CHARS),
        ("y" * RESPONSE_EXCERPT_CHARS, "y" * RESPONSE_EXCERPT_CHARS),
        ("short reason", "short reason"),
        ("", None),
    ],
)
def test_the_response_excerpt_is_capped(body, excerpt):
    # The scriptable receiver always answers a short JSON body, so this one uses a transport.
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, text=body)

    client = httpx.Client(transport=httpx.MockTransport(answer))
    sender = CallbackSender(SIGNING_SECRET, timeout_s=1, client=client)
    try:
        result = sender.send(DELIVERY_ID, "https://svc.internal/cb", PAYLOAD)
    finally:
        sender.close()
    assert RESPONSE_EXCERPT_CHARS == 500
    assert result.outcome == "retry"
    assert result.response_excerpt == excerpt


def test_a_refused_connection_is_retried(sender):
    url = f"http://127.0.0.1:{free_port()}/cb"
    result = sender.send(DELIVERY_ID, url, PAYLOAD)
    assert result.outcome == "retry"
    assert result.status is None
    assert result.error is not None and result.error.startswith("connection failed: ")
    assert "refused" in result.error.lower()


def test_a_timeout_is_retried(sender):
    # Its own receiver: the slow handler is still asleep when the test ends.
    with running_receiver() as receiver:
        # The handler wakes after the client has gone; its broken pipe is expected, not news.
        receiver.server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        receiver.delay_s = 1.0
        result = sender.send(DELIVERY_ID, receiver.url + "/cb", PAYLOAD)
    assert len(receiver.requests) == 1
    assert result.outcome == "retry"
    assert result.status is None
    assert result.error is not None and result.error.startswith("timeout: ")
    assert 250 <= result.duration_ms < 950  # gave up at the 0.3 s timeout, not at the answer


def test_trickling_headers_end_the_attempt_at_its_deadline():
    # One byte every 0.25 s never trips a 1 s per-read timeout: only a deadline for the whole
    # attempt ends it, before the answer is complete.
    sender = CallbackSender(SIGNING_SECRET, timeout_s=1)
    try:
        with trickling_receiver(["headers"]) as receiver:
            started = time.monotonic()
            result = sender.send(DELIVERY_ID, receiver.url + "/cb", PAYLOAD)
            waited = time.monotonic() - started
            assert receiver.completed == []  # the answer was still trickling
    finally:
        sender.close()
    assert len(receiver.requests) == 1
    assert (result.outcome, result.status) == ("retry", None)
    assert result.error == "timeout: attempt exceeded 1s deadline"
    assert 900 <= result.duration_ms < 2000
    assert waited < 2.0


@pytest.mark.parametrize(("status", "outcome"), [(500, "retry"), (404, "permanent")])
def test_a_trickling_body_is_cut_at_the_deadline_and_its_status_kept(status, outcome):
    # The status arrived in time and decides the outcome; only the excerpt read is cut short.
    sender = CallbackSender(SIGNING_SECRET, timeout_s=1)
    try:
        with trickling_receiver(["body"], body_status=status) as receiver:
            started = time.monotonic()
            result = sender.send(DELIVERY_ID, receiver.url + "/cb", PAYLOAD)
            waited = time.monotonic() - started
            assert receiver.completed == []
    finally:
        sender.close()
    assert (result.outcome, result.status) == (outcome, status)
    assert result.error == f"HTTP {status}; answer cut off: attempt exceeded 1s deadline"
    assert result.response_excerpt is not None
    assert 0 < len(result.response_excerpt) < 10  # what arrived before the deadline
    assert set(result.response_excerpt) == {"x"}
    assert 900 <= result.duration_ms < 2000
    assert waited < 2.0


def test_close_ends_an_attempt_in_flight_and_stops_the_sender():
    sender = CallbackSender(SIGNING_SECRET, timeout_s=30)
    results: list[AttemptResult] = []
    with trickling_receiver(["headers"]) as receiver:
        url = receiver.url + "/cb"
        attempt = threading.Thread(target=lambda: results.append(sender.send("d", url, PAYLOAD)))
        attempt.start()
        wait_for(lambda: receiver.requests, timeout=5, what="the attempt to reach the receiver")
        sender.close()
        attempt.join(timeout=5)
        assert not attempt.is_alive()  # the attempt did not wait out its 30 s
    [result] = results
    assert result.outcome == "retry"
    assert result.error == "sender closed during the attempt"
    assert not [t for t in threading.enumerate() if t.name == "callback-sender"]
    sender.close()  # twice is harmless
    with pytest.raises(RuntimeError, match="closed"):
        sender.send(DELIVERY_ID, url, PAYLOAD)


def test_an_invalid_url_is_permanent(sender):
    result = sender.send(DELIVERY_ID, "http://bad\x00host/cb", PAYLOAD)
    assert result.outcome == "permanent"
    assert result.status is None
    assert result.error is not None and result.error.startswith("invalid URL: ")


def test_the_attempt_is_timed_with_the_injected_clock(receiver):
    ticks = iter([1000.0, 1000.0, 1000.25])
    sender = CallbackSender(SIGNING_SECRET, timeout_s=1, clock=lambda: next(ticks))
    try:
        result = sender.send(DELIVERY_ID, receiver.url + "/cb", PAYLOAD)
    finally:
        sender.close()
    assert (result.at_ms, result.duration_ms) == (1_000_000, 250)


@pytest.mark.parametrize(("status", "outcome"), [(200, "delivered"), (503, "retry")])
def test_an_undecodable_answer_still_yields_an_outcome(receiver, sender, status, outcome):
    receiver.script = [(status, {"Content-Encoding": "gzip"})]
    result = sender.send(DELIVERY_ID, receiver.url + "/cb", PAYLOAD)
    assert (result.outcome, result.status) == (outcome, status)


def test_attempt_result_to_dict():
    result = AttemptResult(
        "retry", at_ms=5, duration_ms=7, status=503, error="HTTP 503", response_excerpt="busy"
    )
    assert result.to_dict(2, "retry") == {
        "n": 2,
        "trigger": "retry",
        "at_ms": 5,
        "duration_ms": 7,
        "status": 503,
        "error": "HTTP 503",
        "outcome": "retry",
        "response": "busy",
    }


# A name nothing resolves: the tests below make looking it up hang until they are done.
HANGING_HOST = "callback.hanging.invalid"


@pytest.fixture
def hanging_resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Name lookups of HANGING_HOST block until the test ends; the event says one started."""
    real_getaddrinfo = socket.getaddrinfo
    asked = threading.Event()
    release = threading.Event()

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == HANGING_HOST:
            asked.set()
            release.wait(timeout=30)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield asked
    release.set()


def start_attempt(sender: CallbackSender, url: str) -> Callable[[], AttemptResult]:
    """Send on another thread; the returned call closes the sender and gives the result."""
    results: list[AttemptResult] = []
    attempt = threading.Thread(target=lambda: results.append(sender.send("d", url, PAYLOAD)))
    attempt.start()

    def close_sender() -> AttemptResult:
        sender.close()
        attempt.join(timeout=5)
        assert not attempt.is_alive()  # the attempt did not wait out its 30 s
        [result] = results
        return result

    return close_sender


def test_close_ends_an_attempt_waiting_on_a_name_lookup(hanging_resolver):
    close_sender = start_attempt(
        CallbackSender(SIGNING_SECRET, timeout_s=30), f"http://{HANGING_HOST}:8080/cb"
    )
    assert hanging_resolver.wait(timeout=5)
    assert close_sender().error == "sender closed during the attempt"


@pytest.fixture
def silent_listener() -> Iterator[socket.socket]:
    """A socket that takes connections and never says a word."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield listener  # the kernel completes the TCP handshake without accept()


def address(listener: socket.socket) -> str:
    host, port = listener.getsockname()[:2]
    return f"{host}:{port}"


@pytest.fixture
def full_listener() -> Iterator[socket.socket]:
    """A listener whose accept queue is full, so the kernel drops new connection requests."""
    with socket.create_server(("127.0.0.1", 0), backlog=0) as listener:
        queued = [socket.socket() for _ in range(3)]
        try:
            for client in queued:
                client.setblocking(False)
                with suppress(BlockingIOError):
                    client.connect(listener.getsockname())
            _, writable, _ = select.select([], queued[:1], [], 5)
            assert writable, "the first connection should have been queued"
            yield listener
        finally:
            for client in queued:
                client.close()


def stuck_url(where: str, request: pytest.FixtureRequest) -> str:
    """A callback URL whose attempt gets stuck at `where`, before any answer."""
    if where == "name lookup":
        request.getfixturevalue("hanging_resolver")
        return f"http://{HANGING_HOST}:8080/cb"
    if where == "connect":  # the kernel would resend the SYN for a minute or more
        return f"http://{address(request.getfixturevalue('full_listener'))}/cb"
    return f"https://{address(request.getfixturevalue('silent_listener'))}/cb"


@pytest.mark.parametrize("where", ["name lookup", "connect", "TLS handshake"])
def test_an_attempt_stuck_before_any_answer_ends_at_its_deadline(where, request, sender):
    url = stuck_url(where, request)
    started = time.monotonic()
    result = sender.send(DELIVERY_ID, url, PAYLOAD)
    waited = time.monotonic() - started
    assert (result.outcome, result.status) == ("retry", None)
    assert result.error == "timeout: attempt exceeded 300ms deadline"
    assert waited < 1.5


@dataclass
class TLSServer:
    url: str
    context: ssl.SSLContext  # a client context that trusts the server's certificate
    paths: list[str]
    release: threading.Event  # ends the wait of requests to /hold, which get no answer


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[TLSServer]:
    """An HTTPS callback on 127.0.0.1 with a self-signed certificate; it answers 200 "ok"."""
    identity = make_signing_identity(common_name="127.0.0.1", ip_addresses=("127.0.0.1",))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(identity.pem)
    key_path.write_bytes(
        identity.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert_path, key_path)
    paths: list[str] = []
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            paths.append(self.path)
            if self.path == "/hold":
                release.wait(timeout=30)
                return
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    # An untrusting client fails the handshake; the server's side of that is not news.
    server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
    server.socket = server_context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        yield TLSServer(
            f"https://127.0.0.1:{port}",
            ssl.create_default_context(cafile=cert_path),
            paths,
            release,
        )
    finally:
        release.set()
        server.shutdown()
        server.server_close()


def test_a_callback_over_tls_is_delivered(tls_server, monkeypatch):
    # The sender trusts the CA bundle; this one trusts the test's certificate instead.
    monkeypatch.setattr(httpx, "create_ssl_context", lambda **_: tls_server.context)
    sender = CallbackSender(SIGNING_SECRET, timeout_s=5)
    try:
        first = sender.send(DELIVERY_ID, tls_server.url + "/cb", PAYLOAD)
        second = sender.send(DELIVERY_ID, tls_server.url + "/cb", PAYLOAD)
    finally:
        sender.close()
    assert [(r.outcome, r.status) for r in (first, second)] == [("delivered", 200)] * 2
    assert tls_server.paths == ["/cb", "/cb"]


def test_an_untrusted_certificate_is_a_connection_failure(tls_server, sender):
    result = sender.send(DELIVERY_ID, tls_server.url + "/cb", PAYLOAD)
    assert (result.outcome, result.status) == ("retry", None)
    assert result.error is not None and result.error.startswith("connection failed: ")
    assert "certificate verify failed" in result.error
    assert tls_server.paths == []


def test_close_ends_an_attempt_waiting_on_a_tls_answer(tls_server, monkeypatch):
    monkeypatch.setattr(httpx, "create_ssl_context", lambda **_: tls_server.context)
    sender = CallbackSender(SIGNING_SECRET, timeout_s=30)
    close_sender = start_attempt(sender, tls_server.url + "/hold")
    wait_for(lambda: tls_server.paths, timeout=5, what="the attempt to reach the receiver")
    assert close_sender().error == "sender closed during the attempt"


def test_close_ends_an_attempt_in_a_tls_handshake(silent_listener):
    sender = CallbackSender(SIGNING_SECRET, timeout_s=30)
    close_sender = start_attempt(sender, f"https://{address(silent_listener)}/cb")
    silent_listener.settimeout(5)
    connection, _ = silent_listener.accept()  # the attempt has connected, and says hello
    with connection:
        assert close_sender().error == "sender closed during the attempt"
