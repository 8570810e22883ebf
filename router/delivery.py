"""One signed POST of a callback body, and what its answer means for the delivery."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
from standardwebhooks.webhooks import Webhook

from router import __version__
from router.config import format_duration
from router.retry import parse_retry_after

Outcome = Literal["delivered", "retry", "permanent"]

# Statuses worth another try: the receiver is slow, throttling or briefly broken.
RETRYABLE_STATUSES = frozenset({408, 425, 429})
# Enough of a failing answer to tell a person why, not enough to bloat Redis.
RESPONSE_EXCERPT_CHARS = 500
USER_AGENT = f"breaker-router/{__version__}"
LOOP_THREAD = "callback-sender"
# How long close() waits for cancelled attempts and closing connections; none does I/O.
CLOSE_TIMEOUT_S = 5.0
# Past its deadline an attempt cancels itself at once; this only bounds a stalled event loop.
LOOP_GRACE_S = 1.0
# Far deeper than any exception chain httpx, httpcore and anyio build; a cycle cannot spin.
CAUSE_DEPTH = 8


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


def _connection_error(exc: httpx.TransportError) -> str:
    """The error with its socket's reason, which the async stack folds into "attempts failed"."""
    cause: BaseException | None = exc
    for _ in range(CAUSE_DEPTH):
        if cause is None:
            break
        if isinstance(cause, BaseExceptionGroup):
            cause = cause.exceptions[0]
            continue
        if isinstance(cause, OSError) and cause.errno:
            reason = os.strerror(cause.errno)
            return f"{exc} ({reason})" if reason.lower() not in str(exc).lower() else str(exc)
        cause = cause.__cause__ or cause.__context__
    return str(exc)


async def _raw_excerpt(response: httpx.Response, deadline: float) -> tuple[str | None, bool]:
    """The start of a failing answer's body, and whether the attempt's deadline cut it off."""
    chunks: list[bytes] = []
    size = 0
    cut = False
    try:
        async with asyncio.timeout_at(deadline):
            async for chunk in response.aiter_raw():
                chunks.append(chunk)
                size += len(chunk)
                if size >= RESPONSE_EXCERPT_CHARS:
                    break
    except TimeoutError:
        cut = True  # keep what arrived: the status already decided the outcome
    except httpx.StreamConsumed:
        chunks = [response.content]  # a response built already read (a test transport)
    except httpx.HTTPError:
        pass  # what arrived is enough; the status already decided the outcome
    text = b"".join(chunks)[:RESPONSE_EXCERPT_CHARS].decode("utf-8", errors="replace")
    return text or None, cut


class CallbackSender:
    """Signs bodies with Standard Webhooks and POSTs them; never follows redirects.

    httpx's timeouts bound each socket operation, so an answer trickled a byte at a time
    never trips them. Each attempt therefore runs on an event loop this sender owns, under
    one deadline that cancels it wherever it is (connect, send, headers or body); callers'
    threads block on the attempt's future.
    """

    def __init__(
        self,
        signing_secret: str,
        *,
        timeout_s: float,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._webhook = Webhook(signing_secret)
        self._clock = clock
        self._timeout_s = timeout_s
        self._client = client or httpx.AsyncClient(
            # The attempt's deadline bounds every phase; per-operation timeouts would only
            # race it with a vaguer message.
            timeout=httpx.Timeout(None),
            follow_redirects=False,
            headers={"user-agent": USER_AGENT},
            # Bounded, so a dead endpoint cannot pin every socket of the process.
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
            trust_env=False,
        )
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        """The sender's loop, started on first use (a sender that only signs needs none)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the callback sender is closed; create a new one")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name=LOOP_THREAD, daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def close(self) -> None:
        """Cancel attempts in flight, close the connections and stop the loop; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            asyncio.run(self._client.aclose())
            return
        shutdown = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
        with suppress(concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
            shutdown.result(timeout=CLOSE_TIMEOUT_S)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=CLOSE_TIMEOUT_S)
        if not thread.is_alive():
            loop.close()

    async def _shutdown(self) -> None:
        current = asyncio.current_task()
        attempts = [task for task in asyncio.all_tasks() if task is not current]
        for task in attempts:
            task.cancel()
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await asyncio.gather(*attempts, return_exceptions=True)
            await self._client.aclose()

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
        loop = self._running_loop()
        started = self._clock()
        attempt = asyncio.run_coroutine_threadsafe(
            self._attempt(url, body.encode(), headers, started), loop
        )
        try:
            # The attempt ends itself at its deadline; the grace only covers a stalled loop.
            return attempt.result(timeout=self._timeout_s + LOOP_GRACE_S)
        except concurrent.futures.CancelledError:
            return self._failed(started, "sender closed during the attempt")
        except concurrent.futures.TimeoutError:
            attempt.cancel()
            return self._failed(started, f"{self._deadline_error()} (event loop stalled)")

    def _deadline_error(self) -> str:
        return f"timeout: {self._exceeded()}"

    def _exceeded(self) -> str:
        return f"attempt exceeded {format_duration(self._timeout_s)} deadline"

    def _failed(self, started: float, error: str) -> AttemptResult:
        elapsed_ms = int((self._clock() - started) * 1000)
        return AttemptResult("retry", int(started * 1000), elapsed_ms, error=error)

    async def _attempt(
        self, url: str, content: bytes, headers: dict[str, str], started: float
    ) -> AttemptResult:
        at_ms = int(started * 1000)
        deadline = asyncio.get_running_loop().time() + self._timeout_s

        def elapsed_ms() -> int:
            return int((self._clock() - started) * 1000)

        try:
            async with asyncio.timeout_at(deadline):
                request = self._client.build_request("POST", url, content=content, headers=headers)
                # Streamed: the status decides the outcome, and a failing answer's body is read
                # raw and capped, so a huge or wrongly encoded body cannot break the attempt.
                response = await self._client.send(request, stream=True)
        except TimeoutError:
            return AttemptResult("retry", at_ms, elapsed_ms(), error=self._deadline_error())
        except httpx.TimeoutException as exc:  # an injected client's own timeouts
            return AttemptResult("retry", at_ms, elapsed_ms(), error=f"timeout: {exc!r}")
        except httpx.TransportError as exc:
            return AttemptResult(
                "retry", at_ms, elapsed_ms(), error=f"connection failed: {_connection_error(exc)}"
            )
        except httpx.InvalidURL as exc:
            return AttemptResult("permanent", at_ms, elapsed_ms(), error=f"invalid URL: {exc}")
        cut = False
        try:
            outcome = classify_status(response.status_code)
            excerpt = None
            if outcome != "delivered":
                excerpt, cut = await _raw_excerpt(response, deadline)
        finally:
            await response.aclose()
        error = _status_error(response)
        if cut:
            error = f"{error}; answer cut off: {self._exceeded()}"
        return AttemptResult(
            outcome,
            at_ms,
            elapsed_ms(),
            status=response.status_code,
            error=error,
            retry_after_s=parse_retry_after(response.headers.get("retry-after")),
            response_excerpt=excerpt,
        )
