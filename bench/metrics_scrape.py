"""What /metrics costs: one scrape with 0, 1,000 and 10,000 breakers, and one metric write.

A scrape reads every figure from Redis (router.metrics.QueueCollector): the queue's depths and
oldest entries, the counter hashes, and each breaker's record under the breaker prefix (at most
MAX_BREAKERS_COUNTED). Breakers are written through `breaker_client` (10 % open). The write is
what a worker adds per attempt (`MetricsWriter.attempt`: one MULTI of two commands).

    .venv/bin/python bench/metrics_scrape.py [--sizes 0,1000,10000] [--scrapes 50]

Redis is 127.0.0.1:6379 unless BENCH_REDIS_URL says otherwise. Asserts nothing.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import redis
from _common import delete_prefixed, environment_line, latency_line, redis_url, unique_prefix
from breaker_client import Breakers

from router.keys import BreakerKeys, RouterKeys
from router.metrics import MetricsWriter, render
from router.queue import DeliveryQueue


def timed_ms(call: Callable[[], object], times: int) -> list[float]:
    values = []
    for _ in range(times):
        started = time.perf_counter()
        call()
        values.append((time.perf_counter() - started) * 1000)
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="0,1000,10000")
    parser.add_argument("--scrapes", type=int, default=50)
    args = parser.parse_args()
    client = redis.Redis.from_url(redis_url(), decode_responses=True)
    print(environment_line(client))
    prefix = unique_prefix()
    breakers_prefix = f"{prefix}-breakers"
    keys = RouterKeys(prefix)
    queue = DeliveryQueue(client, keys, retention_s=60)
    writer = MetricsWriter(client, keys)
    breakers = Breakers.from_url(redis_url(), prefix=breakers_prefix, sync=False)
    try:
        for outcome in ("delivered", "retry", "permanent"):
            for i in range(100):
                writer.attempt(outcome, i / 100)
        writes = timed_ms(lambda: writer.attempt("delivered", 0.05), 1000)
        print(latency_line("MetricsWriter.attempt (one attempt)", writes))
        written = 0
        for size in (int(s) for s in args.sizes.split(",")):
            for i in range(written, size):
                if i % 10 == 0:
                    breakers.open("bench", f"{i:05d}", reason="bench")
                else:
                    breakers.close("bench", f"{i:05d}", reason="bench")
            written = max(written, size)
            scrapes = timed_ms(lambda: render(queue, BreakerKeys(breakers_prefix)), args.scrapes)
            print(latency_line(f"/metrics render, {size} breakers", scrapes))
    finally:
        breakers.stop()
        delete_prefixed(client, prefix, breakers_prefix)


if __name__ == "__main__":
    main()
