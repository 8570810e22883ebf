"""Signed callback requests as the router sends them, for the client's endpoint tests."""

from __future__ import annotations

import json
import time

from breaker_client import sign_headers

from router.callback_body import build_callback_body
from router.model import Notification

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def signed(
    transition: str = "alert",
    *,
    delivery_id: str = "d-1",
    event_ms: int | None = None,
    scope: str = "bank_code:0001",
) -> tuple[bytes, dict[str, str]]:
    """A callback body the router renders for one notification, and its signed headers."""
    notification = Notification(
        source="datadog",
        dedup_key=f"datadog:1:{transition}",
        transition=transition,  # type: ignore[arg-type]
        datadog_transition="Triggered",
        renotification=False,
        title="bank-charge 5xx rate",
        message="",
        callback_urls=("https://svc/breaker/callback",),
        received_at_ms=0,
        event_id="1",
        monitor_id="7",
        event_time_ms=event_ms or int(time.time() * 1000),
        scope=scope,
    )
    body = json.dumps(build_callback_body(delivery_id, notification)).encode()
    return body, sign_headers(body, SECRET, webhook_id=delivery_id)
