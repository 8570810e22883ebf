"""What one Alertmanager webhook costs the router web, by the number of alerts in its group.

Each alert is its own notification and each delivery stores the alerts of the group that name
the same callback, so the stored bytes grow with the square of the group's size up to
`MAX_CARRIED_ALERTS` (50), and linearly past it (each alert then carries only itself). This
posts one firing webhook per size through the Flask test client (no HTTP, no gunicorn) to a
real Redis at 127.0.0.1:6379 (or BENCH_REDIS_URL), under a unique key prefix deleted at the
end, and prints the 202's latency (median of --rounds, each round a fresh group) and the Redis
memory its delivery records take (MEMORY USAGE SAMPLES 0, summed).

    .venv/bin/python bench/alertmanager_ingest.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from router.app import create_app
from tests.alertmanager_payloads import am_webhook, bank_alert

SIZES = (1, 10, 50, 51, 200)
TOKEN = "bench-token-0123456789"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(url, decode_responses=True)
    env = {"REDIS_URL": url, "ROUTER_KEY_PREFIX": prefix, "ROUTER_INBOUND_TOKEN": TOKEN}
    web = create_app(env).test_client()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    callback = "https://bank-charge.internal/breaker/callback"
    print(f"{'alerts':>6} {'202 median ms':>14} {'stored KiB':>11} {'KiB/alert':>10}")
    try:
        for size in SIZES:
            times, stored = [], 0
            for round_ in range(args.rounds):
                key = f'{{}}:{{alertname="BankChargeErrors",round="{size}-{round_}"}}'
                alerts = [bank_alert(f"{i:04d}", callback) for i in range(size)]
                payload = am_webhook(*alerts, group_key=key)
                started = time.perf_counter()
                answer = web.post("/webhooks/alertmanager", json=payload, headers=headers)
                times.append((time.perf_counter() - started) * 1000)
                assert answer.status_code == 202, answer.get_json()
                ids = [d["id"] for d in answer.get_json()["deliveries"]]
                assert len(ids) == size
                stored = sum(
                    client.memory_usage(f"{prefix}:delivery:{i}", samples=0) or 0 for i in ids
                )
            print(
                f"{size:>6} {statistics.median(times):>14.1f} {stored / 1024:>11.1f} "
                f"{stored / 1024 / size:>10.2f}"
            )
    finally:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)


if __name__ == "__main__":
    main()
