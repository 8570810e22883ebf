"""/metrics moves with the work: real Redis, the Flask test client, a worker in a thread."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
import redis as redis_lib
from breaker_client import Breakers
from prometheus_client.parser import text_string_to_metric_families

from router.app import create_app
from router.config import Settings
from router.datadog_stub import StubServer
from router.enrich import Enricher
from router.keys import RouterKeys
from router.metrics import WRITE_PAUSE_S, MetricsWriter, QueueCollector
from router.queue import DeliveryQueue, now_ms
from tests.conftest import free_port
from tests.payloads import custom_payload
from tests.sns_signing import CERT_URL, TOPIC_ARN, body, make_signing_identity, sign_sns
from tests.support import INBOUND_TOKEN, router_env, running_receiver, wait_for
from tests.test_app_sns import DATADOG_TEXT, notification_fields
from tests.test_enrich import MONITOR_ID, FakeTime, notification
from tests.test_worker import running_worker

AUTH = {"Authorization": f"Bearer {INBOUND_TOKEN}"}
CALLBACK = "http://127.0.0.1:9/breaker/callback"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(client) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    return parse(response.get_data(as_text=True))


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 when absent (a counter nobody has moved yet)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def env(redis_url, key_prefix):
    return router_env(
        redis_url, key_prefix, ROUTER_SNS_TOPICS=TOPIC_ARN, BREAKERS_PREFIX=f"{key_prefix}:brk"
    )


@pytest.fixture
def client(env):
    return create_app(env).test_client()


def post(client, payload, headers=AUTH, **kwargs):
    return client.post("/webhooks/datadog", json=payload, headers=headers, **kwargs)


def received(samples: Samples, outcome: str, source: str = "datadog", reason: str = "") -> float:
    return value(
        samples,
        "breaker_router_notifications_received_total",
        source=source,
        outcome=outcome,
        reason=reason,
    )


def test_notifications_are_counted_by_source_and_outcome(client, redis, key_prefix):
    assert post(client, custom_payload(CALLBACK)).status_code == 202
    assert post(client, custom_payload(CALLBACK)).status_code == 202  # Datadog retried
    nothing = custom_payload(CALLBACK)
    nothing["body"] = "no callback line here"
    assert post(client, nothing).status_code == 202
    assert post(client, custom_payload(CALLBACK), headers={}).status_code == 401
    bad_json = client.post(
        "/webhooks/datadog", data="{", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert bad_json.status_code == 400
    assert client.post("/webhooks/datadog", data="x", headers=AUTH).status_code == 415
    many = custom_payload(CALLBACK)
    many["body"] = "\n".join(f"circuit-breaker-callback: {CALLBACK}{i}" for i in range(21))
    assert post(client, many).status_code == 422
    # Redis answers but refuses the write (the stream key holds the wrong type): 503.
    redis.set(f"{key_prefix}:deliveries", "not a stream")
    assert post(client, custom_payload(CALLBACK, event_id="99")).status_code == 503
    redis.delete(f"{key_prefix}:deliveries")

    samples = scrape(client)
    assert received(samples, "queued") == 1
    assert received(samples, "duplicate") == 1
    assert received(samples, "no_callback") == 1
    assert received(samples, "rejected", reason="unauthorized") == 1
    assert received(samples, "rejected", reason="bad_request") == 1
    assert received(samples, "rejected", reason="unsupported_media_type") == 1
    assert received(samples, "rejected", reason="unprocessable") == 1
    assert received(samples, "unavailable") == 1


def test_sns_notifications_count_under_their_own_source(env):
    identity = make_signing_identity()
    fail_fetch = []

    def fetch(url: str) -> bytes:
        if fail_fetch:
            raise OSError("network down")
        return identity.pem

    client = create_app(env, sns_fetch_certificate=fetch).test_client()

    def post_sns(fields):
        signed = sign_sns(fields, identity.key, "2")
        headers = {**AUTH, "Content-Type": "text/plain", "x-amz-sns-message-type": signed["Type"]}
        return client.post("/webhooks/sns", data=body(signed), headers=headers)

    assert post_sns(notification_fields(DATADOG_TEXT)).status_code == 202
    fail_fetch.append(True)
    # A certificate not seen before (the first is cached), which cannot be fetched now.
    other = notification_fields(
        DATADOG_TEXT, message_id="another-message", cert_url=CERT_URL.replace("9c64", "0000")
    )
    assert post_sns(other).status_code == 503
    samples = scrape(client)
    assert received(samples, "queued", source="sns") == 1
    assert received(samples, "unavailable", source="sns") == 1
    assert received(samples, "queued", source="datadog") == 0


def test_queue_depths_and_the_age_of_the_oldest_entries(redis, key_prefix, client):
    for event_id in ("1", "2", "3"):
        post(client, custom_payload(CALLBACK, event_id=event_id))
    queue = DeliveryQueue(redis, RouterKeys(key_prefix), retention_s=60)
    queue.ensure_group()
    [claim] = queue.read("metrics-test", count=1, block_ms=10)
    later = now_ms() + 90_000
    samples = parse_collector(QueueCollector(queue, clock=lambda: later))
    depth = "breaker_router_queue_depth"
    assert value(samples, depth, state="ready") == 2
    assert value(samples, depth, state="in_flight") == 1
    oldest = "breaker_router_queue_oldest_age_seconds"
    assert 90 <= value(samples, oldest, state="in_flight") < 100
    assert 90 <= value(samples, oldest, state="ready") < 100
    # The oldest pending entry is the one claimed; ready ones are younger or as old.
    assert value(samples, oldest, state="ready") <= value(samples, oldest, state="in_flight")
    queue.complete(claim, queue.load(claim.delivery_id))
    for claim in queue.read("metrics-test", count=2, block_ms=10):
        queue.complete(claim, queue.load(claim.delivery_id))
    samples = parse_collector(QueueCollector(queue, clock=lambda: later))
    assert value(samples, oldest, state="ready") == 0
    assert value(samples, oldest, state="in_flight") == 0
    assert value(samples, depth, state="ready") == 0


def parse_collector(collector: QueueCollector) -> Samples:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return parse(generate_latest(registry).decode())


def test_deliveries_and_attempt_latency_move_with_a_worker(redis_url, key_prefix, client):
    with running_receiver() as receiver, running_worker(redis_url, key_prefix, receiver):
        receiver.script = [503, 200, 400]
        post(client, custom_payload(f"{receiver.url}/cb", event_id="1"))
        wait_for(
            lambda: value(scrape(client), "breaker_router_deliveries_total", outcome="delivered"),
            what="a delivery counted",
        )
        post(client, custom_payload(f"{receiver.url}/cb", event_id="2"))
        wait_for(
            lambda: value(scrape(client), "breaker_router_deliveries_total", outcome="dead"),
            what="a dead letter counted",
        )
    samples = scrape(client)
    deliveries = "breaker_router_deliveries_total"
    assert value(samples, deliveries, outcome="retried") == 1
    assert value(samples, deliveries, outcome="delivered") == 1
    assert value(samples, deliveries, outcome="dead") == 1
    histogram = "breaker_router_attempt_duration_seconds"
    for outcome in ("retry", "delivered", "permanent"):
        assert value(samples, f"{histogram}_count", outcome=outcome) == 1
        assert value(samples, f"{histogram}_bucket", outcome=outcome, le="+Inf") == 1
        assert value(samples, f"{histogram}_sum", outcome=outcome) > 0
    # Cumulative buckets: never fewer attempts under a larger bound.
    buckets = sorted(
        (float(dict(labels)["le"]), count)
        for (name, labels), count in samples.items()
        if name == f"{histogram}_bucket" and dict(labels)["outcome"] == "delivered"
    )
    assert [count for _le, count in buckets] == sorted(count for _le, count in buckets)
    assert value(samples, "breaker_router_workers") == 0  # it said goodbye on stop


def test_two_web_processes_report_the_same_cluster_wide_figures(env, redis, key_prefix):
    first, second = create_app(env).test_client(), create_app(env).test_client()
    post(first, custom_payload(CALLBACK, event_id="1"))
    post(second, custom_payload(CALLBACK, event_id="2"))
    post(second, custom_payload(CALLBACK, event_id="2"))
    post(first, custom_payload(CALLBACK), headers={})
    redis.hincrby(f"{key_prefix}:stats", "delivered", 3)  # as a worker elsewhere would
    # Ages move with the clock between two scrapes; everything else must agree.
    ages = "breaker_router_queue_oldest_age_seconds"
    a, b = ({k: v for k, v in scrape(c).items() if k[0] != ages} for c in (first, second))
    assert a == b
    assert received(a, "queued") == 2
    assert received(a, "duplicate") == 1
    assert value(a, "breaker_router_deliveries_total", outcome="delivered") == 3


@pytest.fixture(scope="module")
def datadog() -> Iterator[StubServer]:
    with StubServer() as running:
        yield running


def test_datadog_api_calls_errors_and_rate_limit_waits(datadog, redis, env, key_prefix, client):
    stub = datadog.client()
    stub.reset()
    stub.define_monitor(MONITOR_ID, name="Bank API errors", groups={"bank_code:0001": "Alert"})
    stub.add_fault(f"/api/v1/monitor/{MONITOR_ID}", status=429, reset_s=3)
    settings = Settings(
        dd_api_key="api-key", dd_app_key="app-key", dd_api_host=datadog.url, key_prefix=key_prefix
    )
    fake = FakeTime()
    with Enricher(settings, redis_client=redis, clock=fake.clock, sleep=fake.sleep) as enricher:
        assert enricher.enrich(notification(), budget_s=5).status == "complete"
    samples = scrape(client)
    op = {"operation": "GetMonitor"}
    assert value(samples, "breaker_router_datadog_api_calls_total", **op) == 2
    assert value(samples, "breaker_router_datadog_api_errors_total", kind="rate_limited", **op) == 1
    assert value(samples, "breaker_router_datadog_rate_limit_waits_total", **op) == 1
    waited = value(samples, "breaker_router_datadog_rate_limit_wait_seconds_total", **op)
    assert 2.5 <= waited <= 3.0


def test_reconcile_runs_corrections_and_last_success(redis, key_prefix, client):
    samples = scrape(client)
    assert value(samples, "breaker_router_reconcile_runs_total") == 0
    # What the reconciler writes after each cycle (router.reconcile), read at scrape time.
    keys = RouterKeys(key_prefix)
    redis.hincrby(keys.stats, "reconcile_runs", 4)
    redis.hincrby(keys.stats, "reconcile_corrections", 2)
    success_ms = int(time.time() * 1000) - 30_000
    redis.hset(keys.reconcile_status, "last_success_ms", success_ms)
    samples = scrape(client)
    assert value(samples, "breaker_router_reconcile_runs_total") == 4
    assert value(samples, "breaker_router_reconcile_corrections_total") == 2
    last = value(samples, "breaker_router_reconcile_last_success_timestamp_seconds")
    assert last == success_ms / 1000


def test_breakers_open_are_counted_from_the_breakers_redis(redis_url, key_prefix, client):
    breakers = Breakers.from_url(redis_url, prefix=f"{key_prefix}:brk", sync=False)
    try:
        breakers.open("bank-charge", "0001", reason="alert")
        breakers.open("bank-charge", "0002", reason="alert")
        breakers.close("bank-charge", "0003", reason="recovery")
        breakers.force_open("ledger", reason="maintenance", by="ops")
        samples = scrape(client)
        assert value(samples, "breaker_router_breakers_open") == 3
        assert value(samples, "breaker_router_breakers", state="open") == 2
        assert value(samples, "breaker_router_breakers", state="forced_open") == 1
        assert value(samples, "breaker_router_breakers", state="closed") == 1
        assert value(samples, "breaker_router_breakers_indexed") == 4
        breakers.close("bank-charge", "0001", reason="recovery")
        assert value(scrape(client), "breaker_router_breakers_open") == 2
    finally:
        breakers.stop()


def test_shadow_breakers_and_the_calls_they_let_through(redis_url, key_prefix, client):
    breakers = Breakers.from_url(redis_url, prefix=f"{key_prefix}:brk", sync=False)
    breakers.refresh()
    try:
        breakers.set_shadow("bank-charge", on=True, by="alice")
        breakers.open("bank-charge", "0001", reason="alert")
        breakers.open("bank-charge", reason="vendor down")
        breakers.open("ledger", reason="alert")  # enforcing: refusals are not counted
        assert [breakers.is_open("bank-charge", "0001") for _ in range(3)] == [False] * 3
        assert breakers.is_open("ledger")
        breakers.flush_shadow()
        samples = scrape(client)
        assert value(samples, "breaker_router_breakers_shadow") == 1
        refusals = "breaker_router_breaker_shadow_refusals_total"
        assert value(samples, refusals, breaker="bank-charge", key="0001") == 3
        assert value(samples, refusals, breaker="bank-charge", key="") == 3  # the vendor's too
        assert value(samples, refusals, breaker="ledger", key="") == 0
        # Still open, but no longer shadowed: counted as refusing, and the counter stays.
        breakers.set_shadow("bank-charge", on=False, by="alice")
        samples = scrape(client)
        assert value(samples, "breaker_router_breakers_shadow") == 0
        assert value(samples, refusals, breaker="bank-charge", key="0001") == 3
        assert value(samples, "breaker_router_breakers_open") == 3
    finally:
        breakers.stop()


def test_metrics_with_redis_down_answer_redis_up_0_and_writes_never_fail_the_work(
    key_prefix, caplog
):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    app = create_app(router_env(dead, key_prefix))
    response = app.test_client().get("/metrics")
    assert response.status_code == 200
    assert value(parse(response.get_data(as_text=True)), "breaker_router_redis_up") == 0
    clock = [0.0]
    writer = MetricsWriter(
        redis_lib.Redis.from_url(dead, socket_connect_timeout=0.2),
        RouterKeys(key_prefix),
        clock=lambda: clock[0],
    )
    with caplog.at_level(logging.WARNING, logger="router.metrics"):
        writer.attempt("delivered", 0.2)  # no exception: the delivery goes on
        writer.datadog_call("GetMonitor")  # paused: not even tried
        clock[0] += WRITE_PAUSE_S + 1
        writer.notification("datadog", "queued")  # tried again after the pause
    skipped = [r for r in caplog.records if r.getMessage().startswith("metrics not written")]
    assert len(skipped) == 2
