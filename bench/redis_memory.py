"""Redis memory the router holds per delivery: queued, delivered (kept for the retention), dead.

Measured with MEMORY USAGE on the keys one run creates under its own prefix, so other users
of the same Redis do not disturb the figures. The baseline is the notification itself: the
JSON the router stores, as bytes.

    PYTHONPATH=. .venv/bin/python bench/redis_memory.py [--deliveries 2000]
"""

from __future__ import annotations

import argparse
import json
import time

import redis
from _common import delete_prefixed, environment_line, redis_url, unique_prefix

from router.demo import datadog_payload
from router.keys import RouterKeys
from router.parsing.datadog import parse_datadog_webhook
from router.queue import DeliveryQueue

CALLBACK = "https://bank-charge.internal/breaker/callback"
# One attempt as the worker records it (a 200 in 12 ms), for the delivered and dead figures.
ATTEMPT = {
    "n": 1,
    "trigger": "first",
    "at_ms": 1_795_350_000_000,
    "duration_ms": 12,
    "status": 200,
    "error": None,
    "outcome": "delivered",
    "response": None,
}


def usage(client: redis.Redis, keys: list[str]) -> int:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    return sum(int(n or 0) for n in pipe.execute())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=2000)
    args = parser.parse_args()
    client = redis.Redis.from_url(redis_url(), decode_responses=True)
    prefix = unique_prefix()
    keys = RouterKeys(prefix)
    queue = DeliveryQueue(client, keys, retention_s=7 * 86400)
    try:
        print(environment_line(client))
        queue.ensure_group()
        now_ms = int(time.time() * 1000)
        ids: list[str] = []
        notification_bytes = 0
        for n in range(args.deliveries):
            payload = datadog_payload(
                CALLBACK,
                event_id=str(7_000_000_000_000_000_000 + n),
                monitor_id="155844758",
                scope=f"bank_code:{n % 10000:04d},env:prod",
                date_ms=now_ms,
            )
            notification = parse_datadog_webhook(
                payload, keyword="circuit-breaker-callback", received_at_ms=now_ms
            )
            notification_bytes += len(json.dumps(notification.to_dict()))
            ids += [e.delivery_id for e in queue.enqueue(notification)]
        count = len(ids)
        records = [keys.delivery(i) for i in ids]
        queued = usage(client, [*records, keys.stream]) / count
        print(f"deliveries: {count}; stored notification JSON {notification_bytes / count:.0f} B")
        print(f"queued     {queued:8.0f} B per delivery (record + stream entry)")

        claims = queue.read("bench", count=count, block_ms=100)
        half = len(claims) // 2
        for claim in claims[:half]:
            delivery = queue.load(claim.delivery_id)
            assert delivery is not None
            queue.complete(claim, delivery, attempt=ATTEMPT)
        for claim in claims[half:]:
            delivery = queue.load(claim.delivery_id)
            assert delivery is not None
            queue.dead_letter(claim, delivery, "gave up after 8 attempts", attempt=ATTEMPT)
        delivered = usage(client, records[:half]) / half
        dead = (usage(client, records[half:]) + usage(client, [keys.dead])) / (count - half)
        baseline = notification_bytes / count
        print(f"delivered  {delivered:8.0f} B per delivery, kept for ROUTER_DELIVERY_RETENTION")
        print(f"dead       {dead:8.0f} B per dead letter (record + dead-letter entry), kept")
        print(
            f"ratio to the notification JSON: queued {queued / baseline:.2f}x, "
            f"delivered {delivered / baseline:.2f}x, dead {dead / baseline:.2f}x"
        )
    finally:
        delete_prefixed(client, prefix)
        client.close()


if __name__ == "__main__":
    main()
