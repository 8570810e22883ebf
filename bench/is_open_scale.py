"""`is_open` with 10, 1,000 and 100,000 keys under one breaker name: cost, memory, stalls.

For each size, in one run: N keys of one name are written to Redis as the write scripts
leave them (10 % open, pipelined HSETs for speed; revisions and last-write times included),
plus one key ramping through a real `close`. A `Breakers` with its sync thread loads them.

- cost per call (`timeit`, best of --repeat runs of --loops calls) of `is_open` for a closed
  key, an open key and the ramping key, against a plain dict lookup measured in the same run;
- process memory per key: what `tracemalloc` sees a second, write-only handle allocate for
  its snapshot, divided by N;
- the longest stall of `is_open` in another thread: a thread calls `is_open` in a loop and
  records the longest gap between two calls, while (a) nothing happens (the baseline: the
  OS and the interpreter alone), (b) --changes changes arrive through the channel, (c)
  --changes periodic (incremental) resyncs each read a change whose message was lost,
  (d) one full resync (what a process does on connecting).

    .venv/bin/python bench/is_open_scale.py [--sizes 10,1000,100000] [--loops 200000]
                                            [--switch-interval 0.0005]

A thread that spins on `is_open` gets the GIL back from a thread doing quick Redis round
trips only when the interpreter forces a switch, after `sys.getswitchinterval()` (5 ms by
default): with the default, every stall figure has that floor whatever the client does.

Redis is 127.0.0.1:6379 unless BENCH_REDIS_URL says otherwise. Asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import sys
import threading
import time
import timeit
import tracemalloc
from collections.abc import Callable

import redis
from _common import delete_prefixed, environment_line, redis_url, unique_prefix
from breaker_client import Breakers

from router.keys import BreakerKeys

NAME = "bench-bank"
# Pipelined writes per round trip while filling Redis.
FILL_BATCH = 2000
# Long enough that the ramping key is still ramping while it is measured.
RAMP_WINDOW_S = 3600.0

Row = dict[str, float]


class MutedKeys(BreakerKeys):
    """The same keys, but a change channel nobody listens to: each write's message is lost."""

    @property
    def channel(self) -> str:
        return f"{self.prefix}:nobody-listens"


def fill(client: redis.Redis, keys: BreakerKeys, n: int) -> None:
    """N keys of NAME, every tenth open, as the write scripts store them."""
    now_ms = int(time.time() * 1000)
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        member = keys.member(NAME, f"{i:06d}")
        state = "open" if i % 10 == 0 else "closed"
        fields = {"state": state, "reason": f"bench: {state}", "source": "monitor:1 ", "rev": i + 1}
        fields |= {"since_ms": now_ms, "version": now_ms, "ramp_ms": 0, "updated_ms": now_ms}
        pipe.hset(keys.record(member), mapping=fields)
        pipe.sadd(keys.index, member)
        pipe.zadd(keys.revisions, {member: i + 1})
        pipe.zadd(keys.written, {member: now_ms})
        if i % FILL_BATCH == FILL_BATCH - 1:
            pipe.execute()
    pipe.set(keys.revision, n)
    pipe.execute()


def best_ns(stmt: str, names: dict[str, object], loops: int, repeat: int) -> float:
    timer = timeit.Timer(stmt, globals=names)
    timer.timeit(min(loops, 1000))
    return min(timer.repeat(repeat=repeat, number=loops)) / loops * 1e9


def longest_stall_ms(breakers: Breakers, action: Callable[[], None]) -> tuple[float, float]:
    """The longest gap between two `is_open` calls in another thread while `action` runs, and
    the longest full garbage collection meanwhile (0: none ran), both in ms."""
    full_gcs: list[float] = []
    began = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if info["generation"] == 2:
            if phase == "start":
                began[0] = time.perf_counter()
            else:
                full_gcs.append(time.perf_counter() - began[0])

    stop = threading.Event()
    started = threading.Event()
    worst = [0.0]

    def spin() -> None:
        is_open, clock = breakers.is_open, time.perf_counter
        last = clock()
        longest = 0.0
        started.set()
        while not stop.is_set():
            is_open(NAME, "000001")
            now = clock()
            longest = max(longest, now - last)
            last = now
        worst[0] = longest

    thread = threading.Thread(target=spin)
    gc.callbacks.append(on_gc)
    thread.start()
    started.wait(5)
    try:
        action()
    finally:
        stop.set()
        thread.join(60)
        gc.callbacks.remove(on_gc)
    return worst[0] * 1000, max(full_gcs, default=0.0) * 1000


def wait_for(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("bench: a change did not arrive within the wait")
        time.sleep(0.0005)


def measure(url: str, client: redis.Redis, prefix: str, n: int, args: argparse.Namespace) -> Row:
    """Every figure for one size."""
    keys = BreakerKeys(prefix)
    fill(client, keys, n)
    b = Breakers.from_url(url, prefix=prefix, ramp_window=RAMP_WINDOW_S, startup_wait=120)
    writer = Breakers.from_url(url, prefix=prefix, sync=False)
    muted = Breakers.from_url(url, prefix=prefix, sync=False)
    muted._store.keys = MutedKeys(prefix)
    try:
        if not b.wait_ready(120) or b.stats()["breakers"] < n:
            raise SystemExit(f"bench: the snapshot of {n} keys did not load")
        writer.open(NAME, "ramp", reason="bench")
        writer.close(NAME, "ramp", reason="bench: ramping")
        wait_for(lambda: b.state(NAME, "ramp", local=True).state == "recovering", 5)
        assert b.is_open(NAME, "000000") and not b.is_open(NAME, "000001")
        gc.collect()
        names: dict[str, object] = {"is_open": b.is_open, "d": {NAME: {"k": 1}}}
        names |= {"name": NAME}
        row = {
            "dict": best_ns("d.get(name)", names, args.loops, args.repeat),
            "closed": best_ns("is_open(name, '000001')", names, args.loops, args.repeat),
            "open": best_ns("is_open(name, '000000')", names, args.loops, args.repeat),
            "ramp": best_ns("is_open(name, 'ramp')", names, args.loops, args.repeat),
        }

        def idle() -> None:
            time.sleep(0.5)

        def changes() -> None:
            for i in range(args.changes):
                code = f"{(i * 10 + 1) % n:06d}"
                writer.open(NAME, code, reason="bench: change")
                wait_for(lambda code=code: b.is_open(NAME, code), 5)
                time.sleep(0.01)

        def resyncs() -> None:
            for i in range(args.changes):
                code = f"{(i * 10 + 1) % n:06d}"
                muted.close(NAME, code, reason="bench: lost message", ramp=False)
                b._syncer.resync()  # what the sync thread does every resync_interval
                time.sleep(0.01)

        row["stall_idle"], row["gc_idle"] = longest_stall_ms(b, idle)
        row["stall_change"], row["gc_change"] = longest_stall_ms(b, changes)
        row["stall_resync"], row["gc_resync"] = longest_stall_ms(b, resyncs)
        started = time.perf_counter()
        row["stall_full"], row["gc_full"] = longest_stall_ms(b, lambda: b._syncer.resync(full=True))
        row["full_s"] = time.perf_counter() - started

        # Memory last: measured before the stalls, tracing 100,000 keys set off one 60-110 ms
        # stall in the phase after it (every run; none with the trace left out), which the
        # figures would have shown as the client's.
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        probe = Breakers.from_url(url, prefix=prefix, sync=False)
        probe.refresh()
        row["bytes_per_key"] = (tracemalloc.get_traced_memory()[0] - before) / n
        tracemalloc.stop()
        probe.stop()
    finally:
        for handle in (b, writer, muted):
            handle.stop()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sizes", default="10,1000,100000", help="keys per run, comma-separated")
    parser.add_argument("--loops", type=int, default=200_000, help="is_open calls per timeit run")
    parser.add_argument("--repeat", type=int, default=5, help="timeit runs; the best is kept")
    parser.add_argument("--changes", type=int, default=20, help="changes and resyncs per size")
    parser.add_argument(
        "--switch-interval",
        type=float,
        default=None,
        help="sys.setswitchinterval for the run (default: the interpreter's 5 ms)",
    )
    args = parser.parse_args()
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    sizes = [int(size) for size in args.sizes.split(",")]

    url = redis_url()
    client = redis.Redis.from_url(url, decode_responses=True)
    print(environment_line(client))
    print(
        f"timeit best of {args.repeat} x {args.loops:,} calls, ns per call; stalls: longest gap "
        f"between two is_open calls in another thread, over {args.changes} changes/resyncs; "
        f"GIL switch interval {sys.getswitchinterval() * 1000:g} ms"
    )
    results: dict[int, Row] = {}
    prefixes: list[str] = []
    try:
        for n in sizes:
            prefix = unique_prefix()
            prefixes.append(prefix)
            row = results[n] = measure(url, client, prefix, n, args)
            delete_prefixed(client, prefix)
            print(
                f"{n:>7,} keys: dict {row['dict']:6.1f} ns; is_open closed {row['closed']:6.1f} ns "
                f"({row['closed'] / row['dict']:.1f}x dict), open {row['open']:6.1f} ns, ramping "
                f"{row['ramp']:6.1f} ns ({row['ramp'] / row['closed']:.2f}x closed); snapshot "
                f"{row['bytes_per_key']:,.0f} B/key; longest stall (longest full GC meanwhile): "
                f"idle {row['stall_idle']:.2f} ({row['gc_idle']:.0f}) ms, changes "
                f"{row['stall_change']:.2f} ({row['gc_change']:.0f}) ms, periodic resyncs "
                f"{row['stall_resync']:.2f} ({row['gc_resync']:.0f}) ms, full resync "
                f"{row['stall_full']:.2f} ({row['gc_full']:.0f}) ms, which took "
                f"{row['full_s']:.1f} s while the other thread spun"
            )
        base = results[sizes[0]]
        for n in sizes[1:]:
            row = results[n]
            print(
                f"{n:,} vs {sizes[0]:,} keys: is_open closed "
                f"{row['closed'] / base['closed']:.2f}x, "
                f"open {row['open'] / base['open']:.2f}x, ramping {row['ramp'] / base['ramp']:.2f}x"
            )
    finally:
        delete_prefixed(client, *prefixes)
        client.close()


if __name__ == "__main__":
    main()
