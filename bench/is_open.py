"""Per-call cost of `Breakers.is_open` against a dict lookup, pybreaker and a Redis GET.

All in one run, each with `timeit` (best of --repeat runs of --loops calls; the Redis-backed
ones with --redis-loops calls): a plain dict lookup (the baseline every ratio is against);
`Breakers.is_open` for (a) a breaker never written, (b) a closed key of a name that has other
keys open, (c) an open key, (d) a recovering key (ramp: reads the clock and the rng), and in
shadow mode (e) an open key (the call is let through and counted) and (f) a closed key of a
shadowed name; a pybreaker `CircuitBreaker.call(noop)` with memory storage and with
`CircuitRedisStorage` on the real Redis; and one raw redis-py GET. Keys live under a unique
`bench-<hex>` prefix and are deleted at the end. Prints figures; asserts nothing beyond the
answers being right.

    .venv/bin/python bench/is_open.py [--quick] [--loops 200000] [--redis-loops 2000] [--repeat 5]

Redis is 127.0.0.1:6379 unless BENCH_REDIS_URL says otherwise.
"""

from __future__ import annotations

import argparse
import statistics
import timeit
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import pybreaker
import redis
from _common import delete_prefixed, environment_line, redis_url, unique_prefix
from breaker_client import Breakers

NAME = "bench-bank"
# Long enough that the recovering key is still ramping when it is measured.
RAMP_WINDOW_S = 3600.0


@dataclass(frozen=True)
class Figure:
    label: str
    loops: int
    best_ns: float
    median_ns: float


def measure(label: str, stmt: str, names: dict[str, Any], loops: int, repeat: int) -> Figure:
    """Time `stmt` with timeit: `repeat` runs of `loops` executions; ns per execution."""
    timer = timeit.Timer(stmt, globals=names)
    timer.timeit(min(loops, 1000))  # warm up caches and connections
    runs = [total / loops * 1e9 for total in timer.repeat(repeat=repeat, number=loops)]
    return Figure(label, loops, min(runs), statistics.median(runs))


def noop() -> None:
    return None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--loops", type=int, default=200_000, help="calls per run, in memory")
    parser.add_argument("--redis-loops", type=int, default=2_000, help="calls per run, Redis")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure; best is kept")
    parser.add_argument("--quick", action="store_true", help="a tenth of the loops")
    args = parser.parse_args()
    loops, redis_loops = args.loops, args.redis_loops
    if args.quick:
        loops, redis_loops = max(1, loops // 10), max(1, redis_loops // 10)

    url = redis_url()
    prefix = unique_prefix()
    raw = redis.Redis.from_url(url)  # decode_responses=False: pybreaker requires it
    breakers = Breakers.from_url(url, prefix=prefix, ramp_window=RAMP_WINDOW_S)
    try:
        if not breakers.wait_ready(5):
            raise SystemExit(f"breakers snapshot did not load from {url}")
        breakers.open(NAME, "0002", reason="bench: open key")
        breakers.open(NAME, "0003", reason="bench: will recover")
        breakers.close(NAME, "0003", reason="bench: recovering key")
        assert breakers.state(NAME, "0003").state == "recovering"
        is_open = breakers.is_open
        assert not is_open("bench-never-written", "0001")
        assert not is_open(NAME, "0001")
        assert is_open(NAME, "0002")
        shadowed = f"{NAME}-shadow"
        # A client from before shadow mode (bench/is_open_before_after.py) skips (e) and (f).
        has_shadow = hasattr(breakers, "set_shadow")
        if has_shadow:
            breakers.set_shadow(shadowed, on=True, by="bench")
            breakers.open(shadowed, "0002", reason="bench: open key in shadow mode")
            assert not is_open(shadowed, "0002") and not is_open(shadowed, "0001")

        lookup: dict[str, dict[str, bool]] = {"other-breaker": {"0001": True}}

        memory_cb = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60)
        storage = pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, raw, namespace=prefix)
        redis_cb = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60, state_storage=storage)
        raw.set(f"{prefix}:raw", "closed")

        names: dict[str, Any] = {
            "d": lookup,
            "is_open": is_open,
            "name": NAME,
            "shadowed": shadowed,
            "memory_cb": memory_cb,
            "redis_cb": redis_cb,
            "noop": noop,
            "get": raw.get,
            "raw_key": f"{prefix}:raw",
        }
        # (label, statement, loops): statements, not lambdas, so no case pays an extra call.
        cases = [
            ("dict lookup: d.get(name) (baseline)", "d.get(name)", loops),
            ("is_open (a) never-written breaker", "is_open('bench-never', '0001')", loops),
            ("is_open (b) closed key, other keys open", "is_open(name, '0001')", loops),
            ("is_open (c) open key", "is_open(name, '0002')", loops),
            ("is_open (d) recovering key (ramp)", "is_open(name, '0003')", loops),
            ("pybreaker call(noop), memory, closed", "memory_cb.call(noop)", loops),
            ("pybreaker call(noop), Redis storage, closed", "redis_cb.call(noop)", redis_loops),
            ("redis-py GET of one key", "get(raw_key)", redis_loops),
        ]
        if has_shadow:
            cases += [
                ("is_open (e) shadow mode: open key, counted", "is_open(shadowed, '0002')", loops),
                ("is_open (f) shadow mode: closed key", "is_open(shadowed, '0001')", loops),
            ]
        empty = measure("empty statement", "pass", {}, loops, args.repeat)
        figures = [measure(label, stmt, names, n, args.repeat) for label, stmt, n in cases]
        print(environment_line(raw))
        print(
            f"pybreaker {version('pybreaker')}, redis-py {version('redis')}; timeit, best of "
            f"{args.repeat} runs of the calls shown; ns per call, timeit's loop included "
            f"(an empty statement costs {empty.best_ns:.1f} ns)"
        )
        base = figures[0].best_ns
        for fig in figures:
            print(
                f"{fig.label:<46} {fig.loops:>7} calls   best {fig.best_ns:>11,.1f} ns   "
                f"median {fig.median_ns:>11,.1f} ns   {fig.best_ns / base:>9,.1f}x dict"
            )
        steady = max(fig.best_ns for fig in figures[1:4])  # (a)-(c): no clock, no rng
        ramp = figures[4].best_ns
        pyb_mem, pyb_redis = figures[5].best_ns, figures[6].best_ns
        print(
            f"is_open, slowest of (a)-(c): {pyb_mem / steady:,.1f}x cheaper than pybreaker memory, "
            f"{pyb_redis / steady:,.0f}x cheaper than pybreaker Redis; recovering (d): "
            f"{pyb_mem / ramp:,.1f}x and {pyb_redis / ramp:,.0f}x"
        )
    finally:
        breakers.stop()
        delete_prefixed(raw, prefix)
        raw.close()


if __name__ == "__main__":
    main()
