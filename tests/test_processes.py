"""Whole processes over real HTTP: gunicorn web, `router worker`, a callback, a Redis server."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import redis as redis_lib
from standardwebhooks.webhooks import Webhook

from router.devserver import web_command
from router.keys import RouterKeys
from router.queue import DeliveryQueue, now_ms
from tests.conftest import free_port
from tests.payloads import custom_payload
from tests.support import (
    INBOUND_TOKEN,
    SIGNING_SECRET,
    process,
    router_command,
    router_env,
    running_receiver,
    trickling_receiver,
    wait_for,
    wait_http,
)

AUTH = {"Authorization": f"Bearer {INBOUND_TOKEN}"}
# A 1 s deadline against an endpoint trickling a byte every 0.25 s (no read ever times out);
# a claim idle far beyond it, so nothing but the deadline can end the first attempt.
TRICKLE_DEADLINE = {
    "ROUTER_DELIVERY_TIMEOUT": "1s",
    "ROUTER_CLAIM_IDLE": "30s",
    "ROUTER_RETRY_SCHEDULE": "1s",
}
# Short timings so a reclaim happens within seconds (the shortest ROUTER_CLAIM_IDLE allows).
FAST_RECLAIM = {
    "ROUTER_DELIVERY_TIMEOUT": "2s",
    "ROUTER_ENRICH_BUDGET": "500ms",
    "ROUTER_CLAIM_IDLE": "5s",
}


@contextmanager
def redis_server(port: int, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not on the PATH (apt-get install redis-server)", pytrace=False)
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with process(args, {}, log_path=tmp_path / f"redis-{port}-{time.time_ns()}.log") as proc:
        client = redis_lib.Redis(port=port, socket_connect_timeout=0.2)
        wait_for(lambda: _pings(client), timeout=10, what=f"redis-server on {port}")
        yield proc


def _pings(client: redis_lib.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis_lib.RedisError:
        return False


@contextmanager
def web(env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    port = free_port()
    args = web_command(port)
    with process(args, env, log_path=tmp_path / "web.log"):
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/healthz")
        yield url


def post_alert(base: str, callback: str, **kwargs) -> httpx.Response:
    return httpx.post(
        f"{base}/webhooks/datadog",
        json=custom_payload(callback, **kwargs),
        headers=AUTH,
        timeout=10,
    )


def test_alert_through_gunicorn_and_worker_reaches_the_callback_signed(
    redis_url, key_prefix, tmp_path
):
    with running_receiver() as receiver:
        env = router_env(redis_url, key_prefix, ROUTER_CALLBACK_ALLOW=receiver.url)
        with (
            web(env, tmp_path) as base,
            process(router_command("worker"), env, log_path=tmp_path / "worker.log"),
        ):
            sent = time.time()
            response = post_alert(base, f"{receiver.url}/breaker/callback")
            assert response.status_code == 202, response.text
            [delivery] = response.json()["deliveries"]
            wait_for(lambda: receiver.requests, timeout=15, what="the callback")
            [request] = receiver.requests
            body = Webhook(SIGNING_SECRET).verify(request.body, request.headers)
            assert body["delivery_id"] == delivery["id"] == request.headers["webhook-id"]
            print(f"alert POST to callback: {(request.at - sent) * 1000:.0f} ms")


def test_a_sigkilled_worker_holding_a_delivery_does_not_lose_it(redis_url, key_prefix, tmp_path):
    with running_receiver() as receiver:
        env = router_env(redis_url, key_prefix, ROUTER_CALLBACK_ALLOW=receiver.url, **FAST_RECLAIM)
        receiver.delay_s = 1.5  # the first attempt is in flight while the worker dies
        with process(router_command("worker"), env, log_path=tmp_path / "doomed.log") as doomed:
            client = redis_lib.Redis.from_url(redis_url, decode_responses=True)
            from router.keys import RouterKeys
            from router.model import Notification  # noqa: F401
            from router.parsing.datadog import parse_datadog_webhook
            from router.queue import DeliveryQueue

            queue = DeliveryQueue(client, RouterKeys(key_prefix), retention_s=60)
            notification = parse_datadog_webhook(
                custom_payload(f"{receiver.url}/cb"),
                keyword="circuit-breaker-callback",
                received_at_ms=now_ms(),
            )
            [enqueued] = queue.enqueue(notification)
            wait_for(lambda: receiver.requests, timeout=15, what="the doomed worker's attempt")
            doomed.send_signal(signal.SIGKILL)
            doomed.wait(timeout=5)
        assert queue.depths()["in_flight"] == 1  # still held by the dead worker
        receiver.delay_s = 0
        with process(router_command("worker"), env, log_path=tmp_path / "survivor.log"):
            wait_for(
                lambda: queue.load(enqueued.delivery_id).status == "delivered",
                timeout=20,
                what="the survivor to reclaim and deliver",
            )
        ids = receiver.webhook_ids()
        assert ids == {enqueued.delivery_id}
        assert len(receiver.requests) == 2


def test_sigterm_lets_the_in_flight_delivery_finish(redis_url, key_prefix, tmp_path):
    with running_receiver() as receiver:
        env = router_env(redis_url, key_prefix, ROUTER_CALLBACK_ALLOW=receiver.url)
        receiver.delay_s = 1.5
        with (
            web(env, tmp_path) as base,
            process(router_command("worker"), env, log_path=tmp_path / "worker.log") as worker,
        ):
            post_alert(base, f"{receiver.url}/cb")
            wait_for(lambda: receiver.requests, timeout=15, what="the attempt")
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=15) == 0
        client = redis_lib.Redis.from_url(redis_url, decode_responses=True)
        statuses = [
            client.hget(key, "status")
            for key in client.scan_iter(f"{key_prefix}:delivery:*", count=1000)
        ]
        assert statuses == ["delivered"]
        assert "finishing in-flight deliveries" in (tmp_path / "worker.log").read_text()


def test_redis_outage_is_503_and_service_resumes_without_restart(key_prefix, tmp_path):
    port = free_port()
    redis_url = f"redis://127.0.0.1:{port}/0"
    with running_receiver() as receiver:
        env = router_env(redis_url, key_prefix, ROUTER_CALLBACK_ALLOW=receiver.url)
        with (
            redis_server(port, tmp_path) as server,
            web(env, tmp_path) as base,
            process(router_command("worker"), env, log_path=tmp_path / "worker.log"),
        ):
            assert post_alert(base, f"{receiver.url}/cb", event_id="1").status_code == 202
            wait_for(lambda: len(receiver.requests) == 1, timeout=15, what="first callback")

            server.terminate()
            server.wait(timeout=10)
            down = post_alert(base, f"{receiver.url}/cb", event_id="2")
            assert down.status_code == 503, down.text
            assert "Redis" in down.json()["error"]
            assert httpx.get(f"{base}/readyz", timeout=10).status_code == 503

            with redis_server(port, tmp_path):
                wait_for(
                    lambda: httpx.get(f"{base}/readyz", timeout=10).status_code == 200,
                    timeout=15,
                    what="readyz to recover",
                )
                again = post_alert(base, f"{receiver.url}/cb", event_id="2")
                assert again.status_code == 202, again.text
                # The restarted Redis kept nothing: the worker recreates its group itself.
                wait_for(lambda: len(receiver.requests) == 2, timeout=20, what="2nd callback")


def test_a_trickling_callback_is_cut_at_the_deadline_then_delivered_once(
    redis_url, key_prefix, tmp_path
):
    with trickling_receiver(["headers"]) as receiver:
        env = router_env(
            redis_url, key_prefix, ROUTER_CALLBACK_ALLOW=receiver.url, **TRICKLE_DEADLINE
        )
        queue = DeliveryQueue(
            redis_lib.Redis.from_url(redis_url, decode_responses=True),
            RouterKeys(key_prefix),
            retention_s=60,
        )
        with (
            web(env, tmp_path) as base,
            process(router_command("worker"), env, log_path=tmp_path / "worker.log"),
        ):
            response = post_alert(base, f"{receiver.url}/breaker/callback")
            assert response.status_code == 202, response.text
            [queued] = response.json()["deliveries"]
            wait_for(
                lambda: queue.load(queued["id"]).status == "delivered",
                timeout=20,
                what="the retry to deliver",
            )
        delivery = queue.load(queued["id"])
        first, second = delivery.attempts
        assert (first["outcome"], first["error"]) == (
            "retry",
            "timeout: attempt exceeded 1s deadline",
        )
        assert first["duration_ms"] < 2000  # the trickle would have taken ~25 s
        assert (second["outcome"], second["status"]) == ("delivered", 200)
        assert receiver.completed == [200]  # one 2xx: the trickled answer never completed
        assert [r.headers["webhook-id"] for r in receiver.requests] == [queued["id"]] * 2


def test_sigterm_does_not_wait_for_a_trickling_callback(redis_url, key_prefix, tmp_path):
    with trickling_receiver(["headers"]) as receiver:
        env = router_env(
            redis_url, key_prefix, ROUTER_CALLBACK_ALLOW=receiver.url, **TRICKLE_DEADLINE
        )
        with (
            web(env, tmp_path) as base,
            process(router_command("worker"), env, log_path=tmp_path / "worker.log") as worker,
        ):
            response = post_alert(base, f"{receiver.url}/cb")
            [queued] = response.json()["deliveries"]
            wait_for(lambda: receiver.requests, timeout=15, what="the attempt")
            worker.send_signal(signal.SIGTERM)
            # The drain waits for the attempt, which its deadline ends within a second.
            assert worker.wait(timeout=5) == 0
        queue = DeliveryQueue(
            redis_lib.Redis.from_url(redis_url, decode_responses=True),
            RouterKeys(key_prefix),
            retention_s=60,
        )
        [attempt] = queue.load(queued["id"]).attempts
        assert (attempt["outcome"], attempt["error"]) == (
            "retry",
            "timeout: attempt exceeded 1s deadline",
        )
        assert receiver.completed == []
