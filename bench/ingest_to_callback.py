"""How long from a Datadog webhook POST to the signed callback arriving, through real processes.

Starts gunicorn (the router web) and one `router worker` against the Redis at
127.0.0.1:6379 (or BENCH_REDIS_URL), with a callback receiver in this process, and sends
alerts one at a time. Baseline in the same run: the same JSON POSTed straight to the receiver.

    .venv/bin/python bench/ingest_to_callback.py [--alerts 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from router.devserver import web_command
from tests.conftest import free_port
from tests.payloads import custom_payload
from tests.support import (
    INBOUND_TOKEN,
    process,
    router_command,
    router_env,
    running_receiver,
    wait_for,
    wait_http,
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(name: str, values_ms: list[float]) -> None:
    print(
        f"{name:<34} p50 {percentile(values_ms, 0.5):7.2f} ms   "
        f"p99 {percentile(values_ms, 0.99):7.2f} ms   max {max(values_ms):7.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--alerts", type=int, default=300)
    args = parser.parse_args()
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    logs = Path(os.environ.get("TMPDIR", "/tmp")) / prefix
    logs.mkdir(parents=True)
    client = redis.Redis.from_url(redis_url)
    try:
        with running_receiver() as receiver:
            env = router_env(
                redis_url,
                prefix,
                ROUTER_CALLBACK_ALLOW=receiver.url,
                ROUTER_LOG_LEVEL="WARNING",
            )
            port = free_port()
            web_args = web_command(port)
            with (
                process(web_args, env, log_path=logs / "web.log"),
                process(router_command("worker"), env, log_path=logs / "worker.log"),
            ):
                base = f"http://127.0.0.1:{port}"
                wait_http(f"{base}/readyz")
                headers = {"Authorization": f"Bearer {INBOUND_TOKEN}"}
                with httpx.Client(timeout=10) as http:
                    # Baseline: the same body, straight to the receiver.
                    direct = []
                    for n in range(args.alerts):
                        started = time.perf_counter()
                        http.post(
                            f"{receiver.url}/direct", json=custom_payload("x", event_id=str(n))
                        )
                        direct.append((time.perf_counter() - started) * 1000)
                    receiver.requests.clear()

                    accepted, end_to_end = [], []
                    for n in range(args.alerts):
                        payload = custom_payload(f"{receiver.url}/cb", event_id=str(10**6 + n))
                        started = time.perf_counter()
                        response = http.post(
                            f"{base}/webhooks/datadog", json=payload, headers=headers
                        )
                        accepted.append((time.perf_counter() - started) * 1000)
                        assert response.status_code == 202, response.text
                        wait_for(
                            lambda n=n: len(receiver.requests) > n, timeout=10, interval=0.0005
                        )
                        end_to_end.append((time.perf_counter() - started) * 1000)
        print(
            f"{args.alerts} alerts, one at a time, gunicorn 2 workers + 1 router worker, loopback"
        )
        report("baseline: POST straight to callback", direct)
        report("router: POST answered 202", accepted)
        report("router: POST to callback received", end_to_end)
        ratio = statistics.median(end_to_end) / statistics.median(direct)
        print(f"end-to-end p50 / baseline p50: {ratio:.1f}x")
    finally:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)


if __name__ == "__main__":
    main()
