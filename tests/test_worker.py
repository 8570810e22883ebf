"""The worker against real HTTP callbacks and a real Redis (worker in a thread)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from standardwebhooks.webhooks import Webhook

from router.config import Settings
from router.keys import RouterKeys
from router.parsing.datadog import parse_datadog_webhook
from router.queue import DeliveryQueue, now_ms
from router.worker import Worker
from tests.payloads import custom_payload
from tests.support import SIGNING_SECRET, Receiver, router_env, running_receiver, wait_for


@contextmanager
def running_worker(
    redis_url: str, key_prefix: str, *receivers: Receiver, **env: str
) -> Iterator[Worker]:
    if receivers:
        env.setdefault("ROUTER_CALLBACK_ALLOW", ",".join(r.url for r in receivers))
    worker = Worker(Settings.from_env(router_env(redis_url, key_prefix, **env)), rng=lambda: 0.5)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(timeout=15)
        assert not thread.is_alive(), "worker did not stop within 15s"


def enqueue(redis, key_prefix, url, **payload_args):
    queue = DeliveryQueue(redis, RouterKeys(key_prefix), retention_s=60)
    notification = parse_datadog_webhook(
        custom_payload(url, **payload_args),
        keyword="circuit-breaker-callback",
        received_at_ms=now_ms(),
    )
    [enqueued] = queue.enqueue(notification)
    return queue, enqueued.delivery_id


def verify(received):
    """The request verifies with the signing secret, as a service would check it."""
    return Webhook(SIGNING_SECRET).verify(received.body, received.headers)


def test_delivers_a_signed_callback_body(redis_url, redis, key_prefix):
    with running_receiver() as receiver, running_worker(redis_url, key_prefix, receiver):
        queue, delivery_id = enqueue(redis, key_prefix, f"{receiver.url}/cb")
        wait_for(lambda: receiver.requests, what="the callback")
        [request] = receiver.requests
        body = verify(request)
        assert request.headers["webhook-id"] == delivery_id
        assert body["delivery_id"] == delivery_id
        assert body["transition"] == "alert"
        assert body["monitor"]["id"] == "155844758"
        assert body["event"]["id"] == "7411112233445566778"
        assert body["group"]["tags"] == ["bank_code:0001", "env:prod"]
        assert body["enrichment"]["complete"] is False
        wait_for(lambda: queue.load(delivery_id).status == "delivered", what="delivered")


def test_two_failures_then_success_keep_one_webhook_id(redis_url, redis, key_prefix):
    with running_receiver() as receiver, running_worker(redis_url, key_prefix, receiver):
        receiver.script = [503, 500]
        queue, delivery_id = enqueue(redis, key_prefix, f"{receiver.url}/cb")
        wait_for(lambda: len(receiver.requests) == 3, what="three attempts")
        wait_for(lambda: queue.load(delivery_id).status == "delivered", what="delivered")
        assert receiver.webhook_ids() == {delivery_id}
        for request in receiver.requests:
            verify(request)
        attempts = queue.load(delivery_id).attempts
        assert [(a["status"], a["outcome"], a["trigger"]) for a in attempts] == [
            (503, "retry", "first"),
            (500, "retry", "retry"),
            (200, "delivered", "retry"),
        ]


def test_a_400_is_dead_lettered_at_once_then_replayed(redis_url, redis, key_prefix):
    with running_receiver() as receiver, running_worker(redis_url, key_prefix, receiver):
        receiver.script = [400]
        queue, delivery_id = enqueue(redis, key_prefix, f"{receiver.url}/cb")
        wait_for(lambda: queue.load(delivery_id).status == "dead", what="dead letter")
        assert len(receiver.requests) == 1  # permanent: no retry
        [letter] = queue.dead_letters()
        assert letter.delivery_id == delivery_id and "HTTP 400" in letter.reason
        # The endpoint is fixed (it now answers 200); a person replays.
        assert queue.replay(delivery_id)
        wait_for(lambda: queue.load(delivery_id).status == "delivered", what="delivered")
        assert [r.headers["webhook-id"] for r in receiver.requests] == [delivery_id] * 2
        assert queue.load(delivery_id).attempts[-1]["trigger"] == "replay"


def test_exhausted_retries_go_to_the_dead_letter_stream(redis_url, redis, key_prefix):
    with (
        running_receiver() as receiver,
        running_worker(redis_url, key_prefix, receiver, ROUTER_RETRY_SCHEDULE="50ms,50ms"),
    ):
        receiver.default_status = 502
        queue, delivery_id = enqueue(redis, key_prefix, f"{receiver.url}/cb")
        wait_for(lambda: queue.load(delivery_id).status == "dead", what="dead letter")
        assert len(receiver.requests) == 3
        assert queue.load(delivery_id).reason == "gave up after 3 attempts; last: HTTP 502"


def test_a_url_outside_the_allow_list_is_never_called(redis_url, redis, key_prefix):
    with (
        running_receiver() as receiver,
        running_worker(
            redis_url, key_prefix, ROUTER_CALLBACK_ALLOW="http://127.0.0.1:1/only-here/"
        ),
    ):
        queue, delivery_id = enqueue(redis, key_prefix, f"{receiver.url}/cb")
        wait_for(lambda: queue.load(delivery_id).status == "dead", what="dead letter")
        assert "ROUTER_CALLBACK_ALLOW" in queue.load(delivery_id).reason
        assert queue.load(delivery_id).attempts == []
        assert receiver.requests == []


def test_redirects_are_not_followed(redis_url, redis, key_prefix):
    with running_receiver() as receiver, running_worker(redis_url, key_prefix, receiver):
        receiver.script = [(302, {"Location": f"{receiver.url}/elsewhere"})]
        queue, delivery_id = enqueue(redis, key_prefix, f"{receiver.url}/cb")
        wait_for(lambda: queue.load(delivery_id).status == "dead", what="dead letter")
        assert [r.path for r in receiver.requests] == ["/cb"]
        assert "redirect" in queue.load(delivery_id).reason


def test_retry_after_is_honoured(redis_url, redis, key_prefix):
    with running_receiver() as receiver, running_worker(redis_url, key_prefix, receiver):
        receiver.script = [(429, {"Retry-After": "1"})]
        enqueue(redis, key_prefix, f"{receiver.url}/cb")
        wait_for(lambda: len(receiver.requests) == 2, what="the second attempt")
        gap = receiver.requests[1].at - receiver.requests[0].at
        assert gap >= 0.95, f"retried after {gap:.2f}s despite Retry-After: 1"


def test_a_slow_endpoint_does_not_hold_up_another(redis_url, redis, key_prefix):
    with (
        running_receiver() as slow,
        running_receiver() as fast,
        running_worker(
            redis_url,
            key_prefix,
            slow,
            fast,
            ROUTER_WORKER_CONCURRENCY="8",
            ROUTER_PER_ENDPOINT_CONCURRENCY="2",
        ),
    ):
        slow.delay_s = 3.0
        for n in range(10):
            enqueue(redis, key_prefix, f"{slow.url}/cb", event_id=str(1000 + n))
        wait_for(lambda: slow.requests, what="the slow endpoint to be called")
        started = time.monotonic()
        enqueue(redis, key_prefix, f"{fast.url}/cb", event_id="2000")
        wait_for(lambda: fast.requests, timeout=2.5, what="the fast endpoint despite the slow one")
        assert time.monotonic() - started < 2.5
        assert len(slow.requests) <= 2  # the per-endpoint cap held


@pytest.mark.parametrize("missing", ["ROUTER_SIGNING_SECRET", "ROUTER_CALLBACK_ALLOW", "REDIS_URL"])
def test_the_worker_names_a_missing_setting(redis_url, key_prefix, missing):
    env = router_env(redis_url, key_prefix)
    del env[missing]
    with pytest.raises(Exception, match=missing):
        Worker(Settings.from_env(env))


def test_a_burst_to_one_endpoint_is_delivered_once_each_within_its_cap(
    redis_url, redis, key_prefix
):
    with (
        running_receiver() as receiver,
        running_worker(
            redis_url,
            key_prefix,
            receiver,
            ROUTER_WORKER_CONCURRENCY="16",
            ROUTER_PER_ENDPOINT_CONCURRENCY="3",
        ),
    ):
        receiver.delay_s = 0.01
        in_flight, peak = [0], [0]
        original_record = receiver.record

        def record(received):
            original_record(received)
            with receiver.lock:
                in_flight[0] += 1
                peak[0] = max(peak[0], in_flight[0])

        def respond():
            answer = Receiver.respond(receiver)
            with receiver.lock:
                in_flight[0] -= 1
            return answer

        receiver.record, receiver.respond = record, respond  # type: ignore[method-assign]
        ids = {
            enqueue(redis, key_prefix, f"{receiver.url}/cb", event_id=str(5000 + n))[1]
            for n in range(150)
        }
        wait_for(lambda: len(receiver.requests) >= 150, timeout=30, what="150 callbacks")
        queue = DeliveryQueue(redis, RouterKeys(key_prefix), retention_s=60)
        wait_for(
            lambda: all(queue.load(i).status == "delivered" for i in ids), what="all delivered"
        )
    assert sorted(r.headers["webhook-id"] for r in receiver.requests) == sorted(ids)
    assert peak[0] <= 3, f"{peak[0]} requests at once to one endpoint; the cap is 3"


def test_stopping_finishes_the_attempt_in_flight_and_hands_back_the_rest(
    redis_url, redis, key_prefix
):
    with running_receiver() as receiver:
        # Long enough that the first attempt is still in flight when the worker is told to stop,
        # even on a loaded machine (1 s was not: the parked delivery went out after it).
        receiver.delay_s = 3.0
        with running_worker(
            redis_url, key_prefix, receiver, ROUTER_PER_ENDPOINT_CONCURRENCY="1"
        ) as worker:
            for n in range(3):
                queue, _ = enqueue(redis, key_prefix, f"{receiver.url}/cb", event_id=str(7000 + n))
            wait_for(lambda: receiver.requests, what="the first attempt")
            wait_for(lambda: worker._gate.parked_total == 1, what="one delivery parked")
        # The worker has stopped: one attempt finished, nothing is left pending on it.
    assert len(receiver.requests) == 1
    depths = queue.depths()
    assert depths["in_flight"] == 0
    assert depths["delayed"] == 2  # the parked one handed back, the deferred one waiting
    statuses = sorted(
        redis.hget(key, "status") for key in redis.scan_iter(f"{key_prefix}:delivery:*", count=1000)
    )
    assert statuses == ["delivered", "queued", "queued"]


def test_a_replayed_poison_delivery_is_sent(redis_url, redis, key_prefix):
    with running_receiver() as receiver:
        queue, delivery_id = enqueue(redis, key_prefix, f"{receiver.url}/cb")
        queue.ensure_group()
        queue.read("w0", count=1, block_ms=10)
        for n in range(1, 7):  # six workers died holding it
            queue.reclaim(f"w{n}", min_idle_ms=0, count=1)
        with running_worker(
            redis_url,
            key_prefix,
            receiver,
            ROUTER_CLAIM_IDLE="5s",
            ROUTER_DELIVERY_TIMEOUT="1s",
            ROUTER_ENRICH_BUDGET="500ms",
        ):
            wait_for(
                lambda: queue.load(delivery_id).status == "dead", timeout=20, what="poison parked"
            )
            assert "a worker stopped" in queue.load(delivery_id).reason
            assert receiver.requests == []
            assert queue.replay(delivery_id)  # a person looked and replays it
            wait_for(lambda: queue.load(delivery_id).status == "delivered", what="delivered")
        assert [r.headers["webhook-id"] for r in receiver.requests] == [delivery_id]
        assert queue.load(delivery_id).attempts[-1]["trigger"] == "replay"


def test_an_entry_whose_record_is_a_half_record_is_dropped_not_retried_for_ever(
    redis_url, redis, key_prefix
):
    with running_receiver() as receiver:
        queue, delivery_id = enqueue(redis, key_prefix, f"{receiver.url}/cb")
        queue.ensure_group()
        # What an older version's reclaim left after a purge: a hash with a counter only.
        redis.delete(queue.keys.delivery(delivery_id))
        redis.hset(queue.keys.delivery(delivery_id), "reclaims", 2)
        with running_worker(redis_url, key_prefix, receiver):
            wait_for(lambda: queue.stats().get("missing_records") == 1, what="counted missing")
            wait_for(lambda: queue.depths()["in_flight"] == 0, what="the entry acknowledged")
        assert not redis.exists(queue.keys.delivery(delivery_id))
        assert queue.depths() == {"ready": 0, "in_flight": 0, "delayed": 0, "dead": 0}
        assert receiver.requests == []


def test_a_dead_workers_heartbeat_and_health_are_pruned(redis_url, redis, key_prefix):
    keys = RouterKeys(key_prefix)
    long_ago = now_ms() - 3_600_000
    redis.hset(keys.worker_heartbeats, "killed-worker", long_ago)
    redis.hset(
        keys.enrichment_health,
        "killed-worker",
        json.dumps({"worker": "killed-worker", "at_ms": long_ago, "ok": False}),
    )
    with running_worker(
        redis_url, key_prefix, ROUTER_CALLBACK_ALLOW="http://127.0.0.1:1/"
    ) as worker:
        wait_for(
            lambda: redis.hkeys(keys.worker_heartbeats) == [worker.name],
            what="only the live worker's heartbeat",
        )
        wait_for(
            lambda: redis.hkeys(keys.enrichment_health) == [worker.name],
            what="only the live worker's Datadog health",
        )
