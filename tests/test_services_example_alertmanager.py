"""The example service driven by Alertmanager callbacks: each alert's `bank_code` label is a key."""

from __future__ import annotations

import json

import pytest
import redis as redis_lib
from breaker_client import Breakers

from router.callback_body import build_callback_body
from router.delivery import CallbackSender
from router.parsing.alertmanager import parse_alertmanager_webhook
from router.queue import now_ms
from services_example.app import create_app
from tests.alertmanager_payloads import am_webhook, bank_alert
from tests.support import SIGNING_SECRET
from tests.test_services_example import Clock, charge

URL = "http://svc/breaker/callback"
RESOLVED_AT = "2026-11-18T21:45:00Z"


@pytest.fixture
def service(redis_url, key_prefix):
    client = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    clock = Clock()
    breakers = Breakers(client, prefix=key_prefix, clock=clock, ramp_window=60.0, rng=lambda: 0.99)
    assert breakers.wait_ready(5), "the breakers snapshot did not load"
    app = create_app({"ROUTER_SIGNING_SECRET": SIGNING_SECRET}, breakers=breakers)
    yield app.test_client(), clock
    breakers.stop()


def deliver(client, *alerts, notified=0, path="/breaker/callback"):
    """What the worker sends for one alert of the webhook: its body, signed."""
    webhook = parse_alertmanager_webhook(
        am_webhook(*alerts), keyword="circuit-breaker-callback", received_at_ms=now_ms()
    )
    notification = webhook.notifications[notified]
    delivery_id = f"dlv_{notification.dedup_key[-40:].replace(':', '_')}"
    body = json.dumps(build_callback_body(delivery_id, notification, notification.carried))
    headers = CallbackSender(SIGNING_SECRET, timeout_s=1).signed_headers(delivery_id, body)
    return client.post(path, data=body, headers=headers)


def test_firing_opens_that_banks_breaker_and_resolved_closes_it(service):
    client, clock = service
    assert deliver(client, bank_alert("0001", URL)).status_code == 200
    assert charge(client, "0001").status_code == 503
    assert charge(client, "0002").status_code == 201
    resolved = bank_alert("0001", URL, status="resolved", ends_at=RESOLVED_AT)
    assert deliver(client, resolved).status_code == 200
    clock.now += 61  # past the ramp
    assert charge(client, "0001").status_code == 201


def test_one_alert_resolving_leaves_the_other_bank_open(service):
    client, clock = service
    deliver(client, bank_alert("0001", URL), bank_alert("0002", URL), notified=0)
    deliver(client, bank_alert("0001", URL), bank_alert("0002", URL), notified=1)
    resolved = bank_alert("0001", URL, status="resolved", ends_at=RESOLVED_AT)
    deliver(client, resolved, bank_alert("0002", URL), notified=0)
    clock.now += 61
    assert [charge(client, code).status_code for code in ("0001", "0002")] == [201, 503]


def test_a_late_firing_resend_does_not_reopen_a_resolved_bank(service):
    client, clock = service
    deliver(client, bank_alert("0001", URL, status="resolved", ends_at=RESOLVED_AT))
    deliver(client, bank_alert("0001", URL))  # older: it started before the resolution
    clock.now += 61
    assert charge(client, "0001").status_code == 201


def test_the_group_snapshot_closes_a_bank_whose_recovery_was_lost(service):
    client, clock = service
    deliver(client, bank_alert("0001", URL), bank_alert("0002", URL), notified=0)
    deliver(client, bank_alert("0001", URL), bank_alert("0002", URL), notified=1)
    # 0002's resolved webhook never arrived; Alertmanager dropped it from the group after.
    later = bank_alert("0003", URL, starts_at="2026-11-18T21:50:00Z")
    deliver(client, bank_alert("0001", URL), later, notified=1)
    clock.now += 61
    assert [charge(client, c).status_code for c in ("0001", "0002", "0003")] == [503, 201, 503]


def test_the_keyless_breaker_stays_open_while_any_alert_fires(service):
    client, clock = service
    fx = "/breaker/fx-quotes/callback"
    deliver(client, bank_alert("0001", URL), bank_alert("0002", URL), path=fx)
    resolved = bank_alert("0001", URL, status="resolved", ends_at=RESOLVED_AT)
    deliver(client, resolved, bank_alert("0002", URL), path=fx)
    clock.now += 61
    assert client.post("/quotes", json={}).status_code == 503
