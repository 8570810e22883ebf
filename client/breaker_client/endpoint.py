"""A service's callback endpoint for any framework: headers and raw body in, status and JSON out.

`CallbackEndpoint` binds the signing secret, the handler and the dedupe store once; calling it
with a request's headers and raw body runs `process_callback` and returns the
`CallbackResponse` to answer. `breaker_client.wsgi` and `breaker_client.asgi` wrap it as
framework-free WSGI and ASGI applications. On an event loop, `await endpoint.handle_async(...)`
runs the whole request (signature check, dedupe, the handler's Redis writes) in a worker
thread, so the loop never blocks on Redis.

    endpoint = CallbackEndpoint(breakers, os.environ["ROUTER_SIGNING_SECRET"],
                                lambda event: apply_callback(breakers, event, "bank-charge"))
    answer = endpoint(request.headers, request.body)  # CallbackResponse(status, body)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping, Sequence

from breaker_client.breakers import Breakers
from breaker_client.receiver import (
    DEFAULT_DEDUPE_TTL_S,
    CallbackResponse,
    Handler,
    process_callback,
)
from breaker_client.signature import DEFAULT_TOLERANCE_S, Secret, SignatureVerifier

# Far above any callback the router renders (a monitor with thousands of groups is a few MB),
# low enough that a stray upload cannot exhaust a service's memory. Larger bodies get 413.
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024

Headers = Mapping[str, str] | Iterable[tuple[str, str]]


class CallbackEndpoint:
    """Verify, parse, dedupe and handle one callback request; framework-free and thread-safe."""

    def __init__(
        self,
        breakers: Breakers | None,
        secret: Secret | Sequence[Secret],
        handler: Handler,
        *,
        tolerance_s: float = DEFAULT_TOLERANCE_S,
        dedupe_ttl_s: float | None = DEFAULT_DEDUPE_TTL_S,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        """With `breakers` and `dedupe_ttl_s`, a `webhook-id` already handled answers 200."""
        if max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be positive, got {max_body_bytes}")
        self.breakers = breakers
        self.verifier = SignatureVerifier(secret, tolerance_s=tolerance_s)
        self.handler = handler
        self.dedupe_ttl_s = dedupe_ttl_s
        self.max_body_bytes = max_body_bytes

    def __call__(self, headers: Headers, body: bytes) -> CallbackResponse:
        """Handle one request: 200/204 done, 401 bad signature, 413 too large, 422 unreadable
        body, 503 Redis unavailable (the router retries). A handler's other errors propagate."""
        if len(body) > self.max_body_bytes:
            return too_large(self.max_body_bytes)
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        return process_callback(
            body,
            {str(name): str(value) for name, value in pairs},
            self.verifier,
            self.handler,
            breakers=self.breakers,
            dedupe_ttl_s=self.dedupe_ttl_s,
        )

    async def handle_async(self, headers: Headers, body: bytes) -> CallbackResponse:
        """`self(headers, body)` in a worker thread: the handler's Redis writes block it, not
        the event loop."""
        return await asyncio.to_thread(self, headers, body)


def too_large(limit: int) -> CallbackResponse:
    return CallbackResponse(413, {"error": f"callback body larger than {limit} bytes"})


def encode_response(answer: CallbackResponse) -> tuple[bytes, list[tuple[str, str]]]:
    """The bytes to send and their headers (an empty body for a 204)."""
    if answer.body is None:
        return b"", [("content-length", "0")]
    content = json.dumps(answer.body, separators=(",", ":")).encode()
    return content, [("content-type", "application/json"), ("content-length", str(len(content)))]
