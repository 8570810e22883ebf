"""How long a breaker change written in one process takes to show in `is_open` in another.

This process opens and closes a breaker through `Breakers` (alternating, --changes times, one
at a time with a random 0.5-2 ms pause between them); a child process (multiprocessing,
spawn) polls its own `Breakers.is_open` in a loop with a tiny sleep (--poll-us) and sends
`time.time()` through a pipe when the answer flips. Latency is write call start (parent) to
flip seen (child), on the same machine clock. Baselines in the same run, same protocol:

- raw pub/sub: PUBLISH in this process, a child blocked in `get_message` on the channel
  (the floor: one Redis round trip to another process);
- raw pub/sub + polled flag: the child's subscriber runs in a thread and sets a flag that the
  main thread polls with the same sleep, so the difference to the client is what the client's
  snapshot path adds (it re-reads the changed breaker with HGETALL and recompiles it).

    .venv/bin/python bench/propagation.py [--changes 500] [--poll-us 50] [--quick]

Keys and the channels live under a unique `bench-<hex>` prefix and are deleted at the end;
the child is stopped by pid. Redis is 127.0.0.1:6379 unless BENCH_REDIS_URL says otherwise.
"""

from __future__ import annotations

import argparse
import random
import statistics
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

import redis
from _common import (
    child,
    delete_prefixed,
    environment_line,
    latency_line,
    percentile,
    redis_url,
    unique_prefix,
)
from breaker_client import Breakers

NAME = "bench-propagation"
KEY = "0001"
# A change not seen within this long means something is broken, not slow.
OBSERVE_TIMEOUT_S = 5.0
CHILD_READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
SUBSCRIBE_TIMEOUT_S = 5.0

BASELINE = "raw pub/sub, subscriber blocked (baseline)"
FLAG = "raw pub/sub, thread + polled flag"
CLIENT = "Breakers.open/close -> is_open in child"


# -- children: each sends "ready", then one time.time() per change seen, until told "stop" ------


def breakers_child(conn: Connection, url: str, prefix: str, poll_s: float) -> None:
    breakers = Breakers.from_url(url, prefix=prefix)
    if not breakers.wait_ready(CHILD_READY_TIMEOUT_S):
        conn.send("no snapshot")
        return
    last = breakers.is_open(NAME, KEY)
    conn.send("ready")
    while not conn.poll():
        now_open = breakers.is_open(NAME, KEY)
        if now_open != last:
            seen = time.time()
            last = now_open
            conn.send(seen)
        time.sleep(poll_s)
    breakers.stop()


def _subscribed(url: str, channel: str) -> redis.client.PubSub:
    pubsub: redis.client.PubSub = redis.Redis.from_url(url).pubsub()  # type: ignore[no-untyped-call]
    pubsub.subscribe(channel)
    deadline = time.monotonic() + SUBSCRIBE_TIMEOUT_S
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.2)
        if message is not None and message["type"] == "subscribe":
            return pubsub
    raise TimeoutError(f"no subscription confirmed on {channel}")


def pubsub_child(conn: Connection, url: str, channel: str, poll_s: float) -> None:
    pubsub = _subscribed(url, channel)
    conn.send("ready")
    while not conn.poll():
        message = pubsub.get_message(timeout=0.2)
        if message is not None and message["type"] == "message":
            conn.send(time.time())
    pubsub.close()


def pubsub_flag_child(conn: Connection, url: str, channel: str, poll_s: float) -> None:
    pubsub = _subscribed(url, channel)
    state = {"count": 0}
    stop = threading.Event()

    def follow() -> None:
        while not stop.is_set():
            message = pubsub.get_message(timeout=0.2)
            if message is not None and message["type"] == "message":
                state["count"] += 1

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    conn.send("ready")
    last = 0
    while not conn.poll():
        count = state["count"]
        if count != last:
            seen = time.time()
            last = count
            conn.send(seen)
        time.sleep(poll_s)
    stop.set()
    thread.join(STOP_TIMEOUT_S)
    pubsub.close()


# -- parent ------------------------------------------------------------------------------------


def run_changes(
    conn: Connection, change: Callable[[int], None], changes: int
) -> tuple[list[float], list[float]]:
    """Make each change, wait for the child to report it; (write→seen ms, write call ms)."""
    seen_ms: list[float] = []
    call_ms: list[float] = []
    for n in range(changes):
        # A random pause, so changes do not land in the same phase of the child's poll loop.
        time.sleep(random.uniform(0.0005, 0.002))
        started = time.time()
        change(n)
        call_ms.append((time.time() - started) * 1000)
        if not conn.poll(OBSERVE_TIMEOUT_S):
            raise TimeoutError(f"change {n} not seen by the child within {OBSERVE_TIMEOUT_S}s")
        seen_ms.append((conn.recv() - started) * 1000)
    return seen_ms, call_ms


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--changes", type=int, default=500, help="changes per measurement")
    parser.add_argument("--poll-us", type=float, default=50.0, help="child's sleep per poll")
    parser.add_argument("--quick", action="store_true", help="100 changes")
    args = parser.parse_args()
    changes = 100 if args.quick else args.changes
    poll_s = args.poll_us / 1e6

    url = redis_url()
    prefix = unique_prefix()
    channel = f"{prefix}:raw-changes"
    client = redis.Redis.from_url(url)
    writer = Breakers.from_url(url, prefix=prefix, sync=False)
    results: dict[str, tuple[list[float], list[float]]] = {}
    try:

        def publish(n: int) -> None:
            client.publish(channel, str(n))

        def flip(n: int) -> None:
            if n % 2 == 0:
                writer.open(NAME, KEY, reason="bench: open")
            else:
                writer.close(NAME, KEY, reason="bench: close", ramp=False)

        with child(pubsub_child, url, channel, poll_s) as conn:
            results[BASELINE] = run_changes(conn, publish, changes)
        with child(pubsub_flag_child, url, channel, poll_s) as conn:
            results[FLAG] = run_changes(conn, publish, changes)
        with child(breakers_child, url, prefix, poll_s) as conn:
            results[CLIENT] = run_changes(conn, flip, changes)
    finally:
        writer.stop()
        delete_prefixed(client, prefix)

    print(environment_line(client))
    print(
        f"{changes} changes per row, one at a time; child polls with time.sleep({args.poll_us:g} "
        "us); latency = write call start (parent) -> change seen (child), time.time()"
    )
    for label, (seen, _) in results.items():
        print(latency_line(label, seen))
    print("after the write call returned (seen - call; negative: seen before it returned):")
    for label, (seen, call) in results.items():
        after = [total - write for total, write in zip(seen, call, strict=True)]
        print(latency_line(f"  {label.split(' (')[0]}", after))
    print("the write call alone (parent, start to return):")
    print(latency_line("  PUBLISH", results[BASELINE][1] + results[FLAG][1]))
    print(latency_line("  Breakers.open/close (one Lua script)", results[CLIENT][1]))
    ours = results[CLIENT][0]
    base, flag = results[BASELINE][0], results[FLAG][0]
    print(
        f"Breakers / raw pub/sub: p50 {statistics.median(ours) / statistics.median(base):.1f}x, "
        f"p99 {percentile(ours, 0.99) / percentile(base, 0.99):.1f}x;  "
        f"Breakers / pub/sub + polled flag: p50 "
        f"{statistics.median(ours) / statistics.median(flag):.1f}x"
    )
    client.close()


if __name__ == "__main__":
    main()
