"""One signed POST of a callback body, and what its answer means for the delivery."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
from standardwebhooks.webhooks import Webhook

from router import __version__
from router.retry import parse_retry_after

Outcome = Literal["delivered", "retry", "permanent"]

# Statuses worth another try: the receiver is slow, throttling or briefly broken.
RETRYABLE_STATUSES = frozenset({408, 425, 429})
# Enough of a failing answer to tell a person why, not enough to bloat Redis.
RESPONSE_EXCERPT_CHARS = 500
USER_AGENT = f"breaker-router/{__version__}"


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


def _raw_excerpt(response: httpx.Response) -> str | None:
    """The start of a failing answer's body, for a person reading the dead letter."""
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_raw():
            chunks.append(chunk)
            size += len(chunk)
            if size >= RESPONSE_EXCERPT_CHARS:
                break
    except httpx.StreamConsumed:
        chunks = [response.content]  # a response built already read (a test transport)
    except httpx.HTTPError:
        pass  # what arrived is enough; the status already decided the outcome
    text = b"".join(chunks)[:RESPONSE_EXCERPT_CHARS].decode("utf-8", errors="replace")
    return text or None


class CallbackSender:
    """Signs bodies with Standard Webhooks and POSTs them; never follows redirects."""

    def __init__(
        self,
        signing_secret: str,
        *,
        timeout_s: float,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._webhook = Webhook(signing_secret)
        self._clock = clock
        self._client = client or httpx.Client(
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
            headers={"user-agent": USER_AGENT},
            # Bounded, so a dead endpoint cannot pin every socket of the process.
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
            trust_env=False,
        )

    def close(self) -> None:
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
        started = self._clock()
        at_ms = int(started * 1000)

        def elapsed_ms() -> int:
            return int((self._clock() - started) * 1000)

        try:
            request = self._client.build_request(
                "POST", url, content=body.encode(), headers=headers
            )
            # Streamed: the status decides the outcome, and a failing answer's body is read
            # raw and capped, so a huge or wrongly encoded body cannot break the attempt.
            response = self._client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            return AttemptResult("retry", at_ms, elapsed_ms(), error=f"timeout: {exc!r}")
        except httpx.TransportError as exc:
            return AttemptResult("retry", at_ms, elapsed_ms(), error=f"connection failed: {exc}")
        except httpx.InvalidURL as exc:
            return AttemptResult("permanent", at_ms, elapsed_ms(), error=f"invalid URL: {exc}")
        try:
            outcome = classify_status(response.status_code)
            excerpt = None if outcome == "delivered" else _raw_excerpt(response)
        finally:
            response.close()
        return AttemptResult(
            outcome,
            at_ms,
            elapsed_ms(),
            status=response.status_code,
            error=_status_error(response),
            retry_after_s=parse_retry_after(response.headers.get("retry-after")),
            response_excerpt=excerpt,
        )
