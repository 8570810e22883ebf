"""Redis memory one breaker key costs: its record, its history, and its share of the index.

Writes --keys breakers of one name through the real scripts (`open`, then `close`), each
opened and then closed (two history entries, the usual life of a key that flapped once),
and sums `MEMORY USAGE <key> SAMPLES 0` (exact) over every key under a unique prefix: the
per-breaker keys (record, history) and the shared ones (index, revisions, written, revision
counter) divided by the number of breakers. Also prints the change of `used_memory` (INFO),
which includes allocator overhead but is noisy on a Redis others use. Then prunes them all
and shows that nothing per breaker is left. Asserts nothing.

    .venv/bin/python bench/breaker_memory.py [--keys 10000] [--reason-bytes 60]

Redis is 127.0.0.1:6379 unless BENCH_REDIS_URL says otherwise.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import redis
from _common import delete_prefixed, environment_line, redis_url, unique_prefix
from breaker_client import Breakers

NAME = "bench-bank"
# What `apply_callback` writes as the source: the monitor and the group.
SOURCE = "monitor:1001 bank_code:000000"
DAY_S = 24 * 3600.0


class Clock:
    """Unix seconds that move only when told: the prune needs the breakers to be idle."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def usage_by_kind(client: redis.Redis, prefix: str) -> dict[str, tuple[int, int]]:
    """Kind of key (`state`, `history`, `index`, ...) -> (keys, bytes) under `prefix`."""
    found: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        kind = str(key).split(":")[1]
        found[kind][0] += 1
        found[kind][1] += int(client.memory_usage(key, samples=0) or 0)
    return {kind: (n, size) for kind, (n, size) in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--keys", type=int, default=10_000, help="breakers to write")
    parser.add_argument("--reason-bytes", type=int, default=60, help="length of each reason")
    args = parser.parse_args()

    url = redis_url()
    prefix = unique_prefix()
    client = redis.Redis.from_url(url, decode_responses=True)
    clock = Clock()
    breakers = Breakers.from_url(url, prefix=prefix, sync=False, clock=clock, idle_ttl=DAY_S)
    try:
        codes = [f"{i:06d}" for i in range(args.keys)]
        reason = "x" * args.reason_bytes
        before = int(client.info("memory")["used_memory"])
        for code in codes:
            breakers.open(NAME, code, reason=reason, source=SOURCE)
            breakers.close(NAME, code, reason=reason, source=SOURCE, ramp=False)
        after = int(client.info("memory")["used_memory"])
        usage = usage_by_kind(client, prefix)

        n = args.keys
        print(environment_line(client))
        print(
            f"{n:,} breakers of one name, each opened and closed (2 history entries), reasons of "
            f"{args.reason_bytes} bytes; MEMORY USAGE ... SAMPLES 0, bytes"
        )
        total = 0
        for kind in sorted(usage):
            count, size = usage[kind]
            total += size
            print(f"  {kind:<10} {count:>7,} keys {size:>13,} bytes {size / n:>9,.1f} per breaker")
        print(f"  {'total':<10} {'':>12} {total:>13,} bytes {total / n:>9,.1f} per breaker")
        print(
            f"INFO used_memory grew by {after - before:,} bytes: {(after - before) / n:,.1f} "
            "per breaker (allocator included; noisy on a shared Redis)"
        )

        clock.now += DAY_S + 1
        pruned = breakers.prune()
        left = usage_by_kind(client, prefix)
        print(f"after a prune one idle time later: {pruned:,} pruned; keys left by kind:", left)
        clock.now += DAY_S + 1
        breakers.prune()
        print("after a second prune (tombstones tidied):", usage_by_kind(client, prefix))
    finally:
        breakers.stop()
        delete_prefixed(client, prefix)
        client.close()


if __name__ == "__main__":
    main()
