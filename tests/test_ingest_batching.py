"""The web's batched enqueue (router.batching) under gunicorn: concurrent webhooks, Redis dying
and coming back. Every 202 must name deliveries that are in Redis; every other answer is a 503
the sender retries. Real processes: gunicorn with the router's settings, a redis-server that
syncs its append-only file on every write, so what it acknowledged survives its SIGKILL."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import redis as redis_lib

from router.devserver import web_command
from tests.conftest import free_port
from tests.payloads import custom_payload
from tests.support import INBOUND_TOKEN, process, router_env, wait_for, wait_http

SENDERS = 16
CALLBACK = "http://127.0.0.1:9/breaker/callback"


@contextmanager
def durable_redis(port: int, data_dir: Path) -> Iterator[None]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not on the PATH (apt-get install redis-server)", pytrace=False)
    args = [
        binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
        "--appendonly", "yes", "--appendfsync", "always", "--save", "",
    ]  # fmt: skip
    log_path = data_dir / f"redis-{time.time_ns()}.log"
    with process(args, {}, log_path=log_path) as proc:
        client = redis_lib.Redis(port=port, socket_connect_timeout=0.2)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis_lib.RedisError:
                return False

        wait_for(answers, timeout=10, what=f"redis-server on {port}")
        yield
        proc.kill()  # as a crash would: what it acknowledged must be in its file already
        proc.wait(timeout=5)


def test_concurrent_webhooks_lose_nothing_when_redis_dies_and_comes_back(tmp_path):
    redis_port = free_port()
    url = f"redis://127.0.0.1:{redis_port}/0"
    env = router_env(url, "batching", ROUTER_LOG_LEVEL="WARNING")
    web_port = free_port()
    base = f"http://127.0.0.1:{web_port}"
    answers: list[tuple[int, dict[str, object], float]] = []
    stop = threading.Event()
    lock = threading.Lock()

    def send(sender: int) -> None:
        headers = {"Authorization": f"Bearer {INBOUND_TOKEN}"}
        with httpx.Client(timeout=30) as http:
            for n in range(100_000):
                if stop.is_set():
                    return
                payload = custom_payload(CALLBACK, event_id=f"{sender}{n:06d}")
                response = http.post(f"{base}/webhooks/datadog", json=payload, headers=headers)
                with lock:
                    answers.append((response.status_code, response.json(), time.monotonic()))

    with process(web_command(web_port), env, log_path=tmp_path / "web.log"):
        with durable_redis(redis_port, tmp_path):
            wait_http(f"{base}/readyz")
            senders = [threading.Thread(target=send, args=(i,)) for i in range(SENDERS)]
            for thread in senders:
                thread.start()
            wait_for(lambda: len(answers) >= 200, timeout=30, what="200 answers")
        killed_at = time.monotonic()
        time.sleep(0.5)  # requests now fail (and are retried inside the 2 s window)
        with durable_redis(redis_port, tmp_path):
            restarted_at = time.monotonic()
            count = len(answers)
            wait_for(lambda: len(answers) >= count + 200, timeout=30, what="answers again")
            stop.set()
            for thread in senders:
                thread.join(timeout=30)
                assert not thread.is_alive()
            client = redis_lib.Redis(port=redis_port, decode_responses=True)
            statuses = {status for status, _, _ in answers}
            assert statuses <= {202, 503}, statuses
            accepted = [body for status, body, _ in answers if status == 202]
            ids = [d["id"] for body in accepted for d in body["deliveries"]]  # type: ignore[attr-defined]
            assert len(ids) == len(accepted)  # one callback line each
            pipe = client.pipeline(transaction=False)
            for delivery_id in ids:
                pipe.hget(f"batching:delivery:{delivery_id}", "url")
            stored = pipe.execute()
            missing = [i for i, url in zip(ids, stored, strict=True) if url != CALLBACK]
            assert not missing, f"{len(missing)} of {len(ids)} accepted deliveries are not in Redis"
            # Accepted before the crash, and after Redis came back.
            assert any(at < killed_at for status, _, at in answers if status == 202)
            assert any(at > restarted_at for status, _, at in answers if status == 202)
            for status, body, _ in answers:
                if status == 503:
                    assert "Redis" in str(body["error"])
