"""One signed POST of a callback body, and what its answer means for the delivery."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import httpcore
import httpx
from standardwebhooks.webhooks import Webhook

from router import __version__
from router.allowlist import address_refusal
from router.config import format_duration
from router.retry import parse_retry_after

Outcome = Literal["delivered", "retry", "permanent"]
# (host, port) -> its addresses, in the order to try them; tests inject their own.
Resolver = Callable[[str, int], list[str]]

# Statuses worth another try: the receiver is slow, throttling or briefly broken.
RETRYABLE_STATUSES = frozenset({408, 425, 429})
# Enough of a failing answer to tell a person why, not enough to bloat Redis.
RESPONSE_EXCERPT_CHARS = 500
USER_AGENT = f"breaker-router/{__version__}"
RESOLVER_THREAD = "callback-resolver"
# Bounded, so a dead endpoint cannot pin every socket of the process.
LIMITS = httpx.Limits(max_connections=256, max_keepalive_connections=64)
# How long close() waits for woken attempts to return; none waits on the network any more.
CLOSE_TIMEOUT_S = 5.0
# A TLS record: a request body is written in pieces this size, each clamped to the deadline.
WRITE_CHUNK_BYTES = 16_384
DEADLINE_PASSED = "no time left before the attempt's deadline"
SENDER_CLOSED = "the callback sender was closed"
SENDER_CLOSED_DURING = "sender closed during the attempt"


@dataclass(frozen=True)
class AttemptResult:
    outcome: Outcome
    at_ms: int
    duration_ms: int
    status: int | None = None
    error: str | None = None
    retry_after_s: float | None = None
    response_excerpt: str | None = None

    def to_dict(self, number: int, trigger: str) -> dict[str, Any]:
        return {
            "n": number,
            "trigger": trigger,
            "at_ms": self.at_ms,
            "duration_ms": self.duration_ms,
            "status": self.status,
            "error": self.error,
            "outcome": self.outcome,
            "response": self.response_excerpt,
        }


def classify_status(status: int) -> Outcome:
    if 200 <= status < 300:
        return "delivered"
    if status in RETRYABLE_STATUSES or status >= 500:
        return "retry"
    # 3xx (redirects are never followed) and every other 4xx: retrying cannot help.
    return "permanent"


def _status_error(response: httpx.Response) -> str | None:
    status = response.status_code
    if 200 <= status < 300:
        return None
    if 300 <= status < 400:
        location = response.headers.get("location", "?")
        return f"HTTP {status} redirect to {location} not followed; fix the callback URL"
    return f"HTTP {status}"


# The current attempt's deadline (time.monotonic()), set by send() for its thread; None outside
# an attempt, where each socket operation keeps only its own timeout.
_DEADLINE: ContextVar[float | None] = ContextVar("callback_attempt_deadline", default=None)


def _raw_excerpt(response: httpx.Response) -> tuple[str | None, httpx.TimeoutException | None]:
    """The start of a failing answer's body, and the timeout that cut it off, if one did."""
    chunks: list[bytes] = []
    size = 0
    cut: httpx.TimeoutException | None = None
    try:
        for chunk in response.iter_raw():
            chunks.append(chunk)
            size += len(chunk)
            if size >= RESPONSE_EXCERPT_CHARS:
                break
    except httpx.TimeoutException as exc:
        cut = exc  # keep what arrived: the status already decided the outcome
    except httpx.StreamConsumed:
        chunks = [response.content]  # a response built already read (a test transport)
    except httpx.HTTPError:
        pass  # what arrived is enough; the status already decided the outcome
    text = b"".join(chunks)[:RESPONSE_EXCERPT_CHARS].decode("utf-8", errors="replace")
    return text or None, cut


def _time_left(timeout: float | None, expired: type[httpcore.TimeoutException]) -> float | None:
    """`timeout` clamped to what is left of this thread's attempt; `expired` if nothing is."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise expired(DEADLINE_PASSED)
    return left if timeout is None else min(timeout, left)


class RefusedTarget(Exception):
    """The URL's host resolved to an address the router must not reach; nothing was sent.

    Not an httpcore error, so httpx passes it through untranslated to `CallbackSender`.
    """


def system_resolver(host: str, port: int) -> list[str]:
    """The host's addresses from getaddrinfo, each once, in the resolver's order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    # As socket.create_connection tries them.
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _is_ip_literal(host: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return True
    return False


class _DeadlineStream(httpcore.NetworkStream):
    """httpcore's sync stream, each operation bounded by what is left of the attempt."""

    def __init__(self, inner: httpcore.NetworkStream, backend: _DeadlineBackend) -> None:
        self._inner = inner
        self._backend = backend
        self._handshaking: socket.socket | None = None
        backend.track(self)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _time_left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        # Each piece gets a fresh clamp; the inner loop of send() calls keeps one timeout.
        for start in range(0, len(buffer), WRITE_CHUNK_BYTES):
            piece = buffer[start : start + WRITE_CHUNK_BYTES]
            self._inner.write(piece, _time_left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._backend.forget(self)
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        # The socket's timeout bounds the whole handshake (CPython keeps one deadline for it).
        left = _time_left(timeout, httpcore.ConnectTimeout)
        # wrap_socket detaches the plain socket before its handshake; a duplicate of it lets
        # abort() reach the connection meanwhile.
        plain = self._inner.get_extra_info("socket")
        self._handshaking = plain.dup() if isinstance(plain, socket.socket) else None
        try:
            tls = self._inner.start_tls(ssl_context, server_hostname, left)
        finally:
            if self._handshaking is not None:
                self._handshaking.close()
        self._backend.forget(self)  # the connection now belongs to the TLS stream
        return _DeadlineStream(tls, self._backend)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)

    def abort(self) -> None:
        """Wake a thread blocked on this stream: it reads end-of-file, writes fail."""
        for sock in (self._handshaking, self._inner.get_extra_info("socket")):
            if isinstance(sock, socket.socket):
                with suppress(OSError):  # already closed, or never connected
                    # The plain socket's shutdown: an SSLSocket's own would drop its TLS
                    # state under the reading thread's feet.
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's sync backend under the attempt's deadline, with name lookups bounded too.

    A socket timeout bounds one operation, so an answer trickled a byte at a time never trips
    it; clamping every connect, read and write to what is left of the deadline ends the attempt
    there. The backend knows its streams and lookups, so `abort()` wakes every attempt blocked
    on one; a connect in progress is not woken and ends at its deadline.
    """

    def __init__(self, resolve: Resolver = system_resolver) -> None:
        self._inner = httpcore.SyncBackend()
        self._resolver = resolve
        self._lock = threading.Lock()
        self._streams: set[_DeadlineStream] = set()
        self._lookups: set[concurrent.futures.Future[list[str]]] = set()
        self._aborted = False

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = [host] if _is_ip_literal(host) else self._resolve(host, port, timeout)
        # Every address is checked before any is tried: a name that mixes a refused address
        # into its answers (DNS rebinding) gets no connection at all.
        for address in addresses:
            refusal = address_refusal(host, address)
            if refusal is not None:
                raise RefusedTarget(refusal)
        failure: httpcore.ConnectError | None = None
        for address in addresses:
            try:
                stream = self._inner.connect_tcp(
                    address,
                    port,
                    _time_left(timeout, httpcore.ConnectTimeout),
                    local_address,
                    socket_options,
                )
            except httpcore.ConnectError as exc:  # the next address may answer, as stdlib does
                failure = exc
                continue
            return _DeadlineStream(stream, self)
        raise failure or httpcore.ConnectError(f"no address for {host}")

    def _resolve(self, host: str, port: int, timeout: float | None) -> list[str]:
        """The host's addresses, looked up on a thread this attempt stops waiting for."""
        answer: concurrent.futures.Future[list[str]] = concurrent.futures.Future()
        with self._lock:
            if self._aborted:
                raise httpcore.ConnectError(SENDER_CLOSED)
            self._lookups.add(answer)
        lookup = threading.Thread(
            target=_look_up,
            args=(self._resolver, host, port, answer),
            name=RESOLVER_THREAD,
            daemon=True,
        )
        lookup.start()
        try:
            return answer.result(_time_left(timeout, httpcore.ConnectTimeout))
        except concurrent.futures.TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"looking up {host}: {DEADLINE_PASSED}") from exc
        finally:
            with self._lock:
                self._lookups.discard(answer)

    def track(self, stream: _DeadlineStream) -> None:
        with self._lock:
            self._streams.add(stream)
            aborted = self._aborted
        if aborted:
            stream.abort()

    def forget(self, stream: _DeadlineStream) -> None:
        with self._lock:
            self._streams.discard(stream)

    def abort(self) -> None:
        """End what every attempt waits on, now and from now on."""
        with self._lock:
            self._aborted = True
            streams, lookups = list(self._streams), list(self._lookups)
        for stream in streams:
            stream.abort()
        for answer in lookups:
            with suppress(concurrent.futures.InvalidStateError):
                answer.set_exception(httpcore.ConnectError(SENDER_CLOSED))


def _look_up(
    resolve: Resolver, host: str, port: int, answer: concurrent.futures.Future[list[str]]
) -> None:
    try:
        addresses = resolve(host, port)
    except OSError as exc:
        with suppress(concurrent.futures.InvalidStateError):
            answer.set_exception(httpcore.ConnectError(str(exc)))
        return
    with suppress(concurrent.futures.InvalidStateError):
        answer.set_result(addresses)


def _deadline_client(timeout_s: float, backend: _DeadlineBackend) -> httpx.Client:
    ssl_context = httpx.create_ssl_context(trust_env=False)
    transport = httpx.HTTPTransport(verify=ssl_context, trust_env=False, limits=LIMITS)
    # httpx's transport takes no network backend: give it httpcore's pool with ours, set up
    # as httpx would set it up.
    transport._pool = httpcore.ConnectionPool(
        ssl_context=ssl_context,
        max_connections=LIMITS.max_connections,
        max_keepalive_connections=LIMITS.max_keepalive_connections,
        keepalive_expiry=LIMITS.keepalive_expiry,
        network_backend=backend,
    )
    return httpx.Client(
        transport=transport,
        # Outside an attempt (no deadline) each operation still has a bound; within one, the
        # pool wait is bounded by this and every socket operation by what is left.
        timeout=httpx.Timeout(timeout_s),
        follow_redirects=False,
        headers={"user-agent": USER_AGENT},
        trust_env=False,
    )


class CallbackSender:
    """Signs bodies with Standard Webhooks and POSTs them; never follows redirects.

    httpx's timeouts bound each socket operation, so an answer trickled a byte at a time
    never trips them. `send()` therefore sets the attempt's deadline for its thread, and the
    client's network backend clamps every connect, read and write to what is left of it,
    which ends the attempt wherever it is (name lookup, connect, TLS, send, headers or body).
    """

    def __init__(
        self,
        signing_secret: str,
        *,
        timeout_s: float,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
        resolve: Resolver = system_resolver,
    ) -> None:
        self._webhook = Webhook(signing_secret)
        self._clock = clock
        self._timeout_s = timeout_s
        self._backend: _DeadlineBackend | None = None
        if client is None:
            self._backend = _DeadlineBackend(resolve)
            client = _deadline_client(timeout_s, self._backend)
        self._client = client
        self._idle = threading.Condition()
        self._in_flight = 0
        self._closed = False

    def close(self) -> None:
        """End attempts in flight, then close the connections; idempotent."""
        with self._idle:
            if self._closed:
                return
            self._closed = True
        if self._backend is not None:
            self._backend.abort()
        with self._idle:
            # Woken attempts return at once; closing the pool under them would race their reads.
            self._idle.wait_for(lambda: self._in_flight == 0, timeout=CLOSE_TIMEOUT_S)
        self._client.close()

    def signed_headers(self, delivery_id: str, body: str) -> dict[str, str]:
        now = self._clock()
        timestamp = datetime.fromtimestamp(now, tz=UTC)
        return {
            "content-type": "application/json",
            "webhook-id": delivery_id,
            "webhook-timestamp": str(int(now)),
            "webhook-signature": self._webhook.sign(delivery_id, timestamp, body),
        }

    def send(self, delivery_id: str, url: str, payload: dict[str, Any]) -> AttemptResult:
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        headers = self.signed_headers(delivery_id, body)
        with self._idle:
            if self._closed:
                raise RuntimeError("the callback sender is closed; create a new one")
            self._in_flight += 1
        started = self._clock()
        deadline = time.monotonic() + self._timeout_s
        token = _DEADLINE.set(deadline)
        try:
            return self._attempt(url, body.encode(), headers, started, deadline)
        finally:
            _DEADLINE.reset(token)
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def _exceeded(self) -> str:
        return f"attempt exceeded {format_duration(self._timeout_s)} deadline"

    def _timeout_reason(self, exc: httpx.TimeoutException, deadline: float) -> str:
        # The backend's clamps end an operation at the deadline, never before it; an earlier
        # timeout is an injected client's own.
        return self._exceeded() if time.monotonic() >= deadline else repr(exc)

    def _attempt(
        self, url: str, content: bytes, headers: dict[str, str], started: float, deadline: float
    ) -> AttemptResult:
        at_ms = int(started * 1000)

        def elapsed_ms() -> int:
            return int((self._clock() - started) * 1000)

        try:
            request = self._client.build_request("POST", url, content=content, headers=headers)
            # Streamed: the status decides the outcome, and a failing answer's body is read
            # raw and capped, so a huge or wrongly encoded body cannot break the attempt.
            response = self._client.send(request, stream=True)
        except httpx.TransportError as exc:
            if self._closed:
                error = SENDER_CLOSED_DURING
            elif isinstance(exc, httpx.TimeoutException):
                error = f"timeout: {self._timeout_reason(exc, deadline)}"
            else:
                error = f"connection failed: {exc}"
            return AttemptResult("retry", at_ms, elapsed_ms(), error=error)
        except httpx.InvalidURL as exc:
            return AttemptResult("permanent", at_ms, elapsed_ms(), error=f"invalid URL: {exc}")
        except RefusedTarget as exc:
            return AttemptResult("permanent", at_ms, elapsed_ms(), error=str(exc))
        cut: httpx.TimeoutException | None = None
        try:
            outcome = classify_status(response.status_code)
            excerpt = None
            if outcome != "delivered":
                excerpt, cut = _raw_excerpt(response)
        finally:
            response.close()
        status_error = _status_error(response)
        if cut is not None:
            status_error = f"{status_error}; answer cut off: {self._timeout_reason(cut, deadline)}"
        return AttemptResult(
            outcome,
            at_ms,
            elapsed_ms(),
            status=response.status_code,
            error=status_error,
            retry_after_s=parse_retry_after(response.headers.get("retry-after")),
            response_excerpt=excerpt,
        )
