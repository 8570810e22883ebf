"""An Alertmanager notification through the worker: its group in the body, no Datadog read."""

from __future__ import annotations

from router.datadog_stub.harness import StubServer
from router.keys import RouterKeys
from router.parsing.alertmanager import parse_alertmanager_webhook
from router.queue import DeliveryQueue, now_ms
from tests.alertmanager_payloads import am_webhook, bank_alert
from tests.support import running_receiver, wait_for
from tests.test_worker import running_worker, verify


def enqueue_alerts(redis, key_prefix, payload):
    queue = DeliveryQueue(redis, RouterKeys(key_prefix), retention_s=60)
    webhook = parse_alertmanager_webhook(
        payload, keyword="circuit-breaker-callback", received_at_ms=now_ms()
    )
    return [queue.enqueue(n) for n in webhook.notifications]


def test_the_body_carries_every_alert_of_the_group_without_a_datadog_read(
    redis_url, redis, key_prefix
):
    with StubServer() as stub, running_receiver() as receiver:
        url = f"{receiver.url}/breaker/callback"
        payload = am_webhook(
            bank_alert("0001", url),
            bank_alert("0002", url, status="resolved", ends_at="2026-11-18T21:41:00Z"),
        )
        # Datadog keys are set and its API answers: a read would be made if one were tried.
        with running_worker(
            redis_url, key_prefix, receiver, DD_API_HOST=stub.url, DD_API_KEY="k", DD_APP_KEY="a"
        ):
            enqueue_alerts(redis, key_prefix, payload)
            wait_for(lambda: len(receiver.requests) == 2, what="both callbacks")
        bodies = sorted((verify(r) for r in receiver.requests), key=lambda b: b["transition"])
        assert stub.client().calls_under("/api/") == 0
    alert, recovery = bodies
    assert alert["source"] == "alertmanager" and alert["transition"] == "alert"
    assert recovery["transition"] == "recovery" and recovery["datadog_transition"] == "resolved"
    assert alert["enrichment"] == {"status": "complete", "complete": True, "problems": []}
    assert alert["monitor"]["name"] == "BankChargeErrors"
    assert alert["monitor"]["overall_state"] == "Alert"
    groups = {g["name"]: g["status"] for g in alert["monitor"]["groups"]}
    assert sorted(groups.values()) == ["Alert", "OK"]
    # The notified group is the alert itself, with its labels as tags (no comma splitting).
    assert alert["group"]["status"] == "Alert"
    assert "bank_code:0001" in alert["group"]["tags"]
    assert alert["group"]["name"] in groups
    assert alert["event"]["id"] == "b4e10001c0ffee00"
    assert alert["event"]["time"] == "2026-11-18T21:40:00.123+00:00"


def test_an_alertmanager_group_is_not_reconciled_against_datadog(redis_url, redis, key_prefix):
    with running_receiver() as receiver:
        url = f"{receiver.url}/breaker/callback"
        with running_worker(redis_url, key_prefix, receiver):
            enqueue_alerts(redis, key_prefix, am_webhook(bank_alert("0001", url)))
            wait_for(lambda: receiver.requests, what="the callback")
            wait_for(
                lambda: redis.hget(f"{key_prefix}:stats", "delivered"), what="the delivery done"
            )
    # Nothing in Datadog to read back: the reconciler must not list it as a monitor.
    assert redis.hlen(RouterKeys(key_prefix).reconcile_targets) == 0


def test_a_label_with_a_comma_stays_one_tag_in_the_group(redis_url, redis, key_prefix):
    with running_receiver() as receiver:
        url = f"{receiver.url}/breaker/callback"
        alert = bank_alert("0001", url)
        alert["labels"]["instance"] = "a,b"
        with running_worker(redis_url, key_prefix, receiver):
            enqueue_alerts(redis, key_prefix, am_webhook(alert))
            wait_for(lambda: receiver.requests, what="the callback")
        body = verify(receiver.requests[0])
    assert "instance:a,b" in body["group"]["tags"]
