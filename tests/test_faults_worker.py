"""What `bench/faults.py redis-restart` found: an attempt that ends while Redis restarts.

Before the fix, the worker could not write the attempt's result and left the delivery
claimed; nothing happened until ROUTER_CLAIM_IDLE passed, when a worker reclaimed it and sent
the callback a second time. Now the worker writes the result once Redis is back.
"""

from __future__ import annotations

import time

import redis as redis_lib

from bench.fault_system import RedisServer
from router.keys import RouterKeys
from router.parsing.datadog import parse_datadog_webhook
from router.queue import DeliveryQueue, now_ms
from router.reconcile import ToldBook
from tests.payloads import custom_payload
from tests.support import process, router_command, router_env, running_receiver, wait_for

# Far longer than the test: a reclaim cannot be what settles the delivery.
CLAIM_IDLE = {"ROUTER_CLAIM_IDLE": "60s", "ROUTER_DELIVERY_TIMEOUT": "5s"}


def test_a_result_that_arrives_while_redis_restarts_is_written_once_redis_is_back(
    key_prefix, tmp_path
):
    server = RedisServer(tmp_path / "redis", tmp_path / "logs")
    server.start()
    try:
        with running_receiver() as receiver:
            receiver.delay_s = 2.0  # the attempt is in flight across the restart
            env = router_env(
                server.url, key_prefix, ROUTER_CALLBACK_ALLOW=receiver.url, **CLAIM_IDLE
            )
            client = redis_lib.Redis.from_url(server.url, decode_responses=True)
            queue = DeliveryQueue(client, RouterKeys(key_prefix), retention_s=600)
            with process(router_command("worker"), env, log_path=tmp_path / "worker.log"):
                notification = parse_datadog_webhook(
                    custom_payload(f"{receiver.url}/cb"),
                    keyword="circuit-breaker-callback",
                    received_at_ms=now_ms(),
                )
                [enqueued] = queue.enqueue(notification)
                wait_for(lambda: receiver.requests, timeout=15, what="the attempt")
                server.stop()  # the callback answers while Redis is down...
                time.sleep(3.0)
                server.start()  # ...and Redis comes back with what it had (append-only)
                wait_for(
                    lambda: queue.load(enqueued.delivery_id).status == "delivered",
                    timeout=15,
                    what="the delivery recorded as delivered, well before a reclaim",
                )
                assert queue.depths()["in_flight"] == 0
                # What goes with the result is written with it: the attempt is counted in
                # /metrics, and the reconciler knows what the callback was told (Redis lost
                # its scripts in the restart: they are loaded again).
                counted = client.hgetall(RouterKeys(key_prefix).attempt_seconds)
                assert any(field.startswith("delivered|") for field in counted), counted
                [target] = ToldBook(client, queue.keys).targets()
                assert (
                    ToldBook(client, queue.keys).told(target)["bank_code:0001,env:prod"].status
                    == "Alert"
                )
            assert len(receiver.requests) == 1
    finally:
        server.stop()
