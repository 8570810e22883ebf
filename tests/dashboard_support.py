"""Helpers for the dashboard tests: an app with or without ROUTER_ADMIN_TOKEN, and real data in
Redis (dead letters, breakers) made through the same code paths the router and services use."""

from __future__ import annotations

import re
from typing import Any

import redis as redis_lib
from breaker_client import Breakers
from flask.testing import FlaskClient

from router.keys import RouterKeys
from router.model import Notification
from router.queue import DeliveryQueue, now_ms
from tests.support import router_env

ADMIN_TOKEN = "test-admin-token-abcdefghijklmnop"
HOSTILE_TITLE = '[Triggered] <script>alert("pwned")</script><img src=x onerror="alert(2)">'
SECRET_URL = "https://router-user:hunter2-secret@bank.internal/breaker/callback"


def dashboard_env(redis_url: str, key_prefix: str, **extra: str) -> dict[str, str]:
    env = router_env(redis_url, key_prefix, BREAKERS_PREFIX=f"{key_prefix}:breakers")
    env["ROUTER_ADMIN_TOKEN"] = ADMIN_TOKEN
    env.update(extra)
    return {k: v for k, v in env.items() if v}


def queue_for(client: redis_lib.Redis, key_prefix: str) -> DeliveryQueue:
    return DeliveryQueue(client, RouterKeys(key_prefix), retention_s=3600)


def breakers_for(client: redis_lib.Redis, key_prefix: str) -> Breakers:
    return Breakers(client, prefix=f"{key_prefix}:breakers", sync=False)


def notification(
    url: str,
    *,
    title: str = "[Triggered] Bank 0001 charge errors",
    monitor_id: str = "155844758",
    dedup_key: str | None = None,
) -> Notification:
    return Notification(
        source="datadog",
        dedup_key=dedup_key or f"datadog:{url}:{title}",
        transition="alert",
        datadog_transition="Triggered",
        renotification=False,
        title=title,
        message=f"charges failing\ncircuit-breaker-callback: {url}",
        callback_urls=(url,),
        received_at_ms=now_ms(),
        event_id="7411112233445566778",
        monitor_id=monitor_id,
        scope="bank_code:0001,env:prod",
    )


def make_dead_letter(queue: DeliveryQueue, note: Notification, *, status: int = 410) -> str:
    """A delivery whose one attempt got a permanent answer: what the worker does with a 410."""
    queue.ensure_group()
    [enqueued] = queue.enqueue(note)
    [claim] = [
        c for c in queue.read("test-worker", 10, 10) if c.delivery_id == enqueued.delivery_id
    ]
    delivery = queue.load(claim.delivery_id)
    assert delivery is not None
    attempt: dict[str, Any] = {
        "n": 1, "trigger": "first", "at_ms": now_ms(), "duration_ms": 12, "status": status,
        "error": f"HTTP {status}", "outcome": "permanent", "response": '{"error": "gone"}',
    }  # fmt: skip
    queue.dead_letter(claim, delivery, f"permanent failure: HTTP {status}", attempt=attempt)
    return enqueued.delivery_id


def csrf_of(client: FlaskClient, path: str = "/ui") -> str:
    """The CSRF token a page's forms carry for this client's session."""
    page = client.get(path).get_data(as_text=True)
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, f"no CSRF field on {path}"
    return match.group(1)


def sign_in(client: FlaskClient, name: str = "Alice Operator", token: str = ADMIN_TOKEN) -> Any:
    return client.post(
        "/ui/login",
        data={"csrf": csrf_of(client, "/ui/login"), "name": name, "token": token, "next": "/ui"},
    )
