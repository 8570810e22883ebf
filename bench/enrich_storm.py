"""Storm benchmark: many notifications for few monitors, through the enricher, against the stub.

Starts the stub Datadog API (`python -m router.datadog_stub`), defines MONITORS monitors of
GROUPS groups each, fires one notification per group through a thread pool (as the worker's
threads would), and prints the Datadog calls made per monitor and the time until every
enrichment is done: first with reads shared (single flight, caches), then without (baseline).

    python bench/enrich_storm.py [--monitors 100] [--groups 100] [--threads 64] [--workers 1]
                                 [--spread-s 0] [--redis-url redis://127.0.0.1:6379/0]
                                 [--no-stub-limits]

The firing part is a `Fire` (notifications in, outcomes out): `direct_fire` calls
`Enricher.enrich`; a fire that posts to the web app and waits for the callbacks can replace it
to measure the full web -> queue -> worker path. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

import router
from router.config import Settings
from router.datadog_stub import StubClient
from router.enrich import DEFAULT_BUDGET_S, Enricher
from router.model import Notification

# The example storm: 10,000 notifications over 100 monitors of 100 groups.
DEFAULT_MONITORS = 100
DEFAULT_GROUPS = 100
# The worker's default concurrency (ROUTER_WORKER_CONCURRENCY).
DEFAULT_THREADS = 64
FIRST_MONITOR_ID = 7_000_000


@dataclass(frozen=True)
class Outcome:
    status: str
    seconds: float


# Notifications in, one outcome per notification out (in any order).
Fire = Callable[[Sequence[Notification]], list[Outcome]]


def direct_fire(
    enrichers: Sequence[Enricher], *, threads: int, budget_s: float, spread_s: float = 0.0
) -> Fire:
    """Enrich through a thread pool; notification i goes to enricher i % len (its "process").

    `spread_s`: notifications arrive evenly over this many seconds instead of all at once.
    """

    def fire(notifications: Sequence[Notification]) -> list[Outcome]:
        start = time.monotonic()

        def one(index: int) -> Outcome:
            due = start + spread_s * index / len(notifications)
            time.sleep(max(0.0, due - time.monotonic()))
            started = time.monotonic()
            result = enrichers[index % len(enrichers)].enrich(
                notifications[index], budget_s=budget_s
            )
            return Outcome(result.status, time.monotonic() - started)

        with ThreadPoolExecutor(max_workers=threads) as pool:
            return list(pool.map(one, range(len(notifications))))

    return fire


@contextmanager
def stub_process() -> Iterator[StubClient]:
    """The stub as its own process, so its work does not share our interpreter's GIL."""
    env = {**os.environ, "PYTHONPATH": str(Path(router.__file__).resolve().parents[1])}
    process = subprocess.Popen(
        [sys.executable, "-m", "router.datadog_stub", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        url = line.rpartition(" ")[2]
        if not url.startswith("http://"):
            raise SystemExit(f"the stub did not start: {line!r}")
        client = StubClient(url)
        client.wait_ready()
        yield client
    finally:
        process.terminate()
        process.wait(timeout=10)


def group_name(index: int) -> str:
    return f"bank_code:{index:04d},env:prod"


def storm(monitors: int, groups: int) -> list[Notification]:
    """Every group of every monitor goes red at once; arrival order shuffled (fixed seed)."""
    now_ms = int(time.time() * 1000)
    notifications = [
        Notification(
            source="datadog",
            dedup_key=f"bench:{m}:{g}",
            transition="alert",
            datadog_transition="Triggered",
            renotification=False,
            title=f"[Triggered on {{{group_name(g)}}}] Bank API errors",
            message="circuit-breaker-callback: https://bank-charge.internal/breaker/callback",
            callback_urls=("https://bank-charge.internal/breaker/callback",),
            received_at_ms=now_ms,
            event_id=str(6_000_000_000_000_000_000 + m * groups + g),
            monitor_id=str(FIRST_MONITOR_ID + m),
            tags=("monitor", *group_name(g).split(",")),
            scope=group_name(g),
        )
        for m in range(monitors)
        for g in range(groups)
    ]
    random.Random(7).shuffle(notifications)
    return notifications


@dataclass(frozen=True)
class Figures:
    label: str
    reads: list[int]
    event_reads: int
    seconds: float
    statuses: Counter[str]
    latencies: list[float]


def run(
    label: str, fire: Fire, notifications: Sequence[Notification], stub: StubClient, monitors: int
) -> Figures:
    # Counted as a difference: the stub keeps counting across both runs.
    before = stub.calls()["paths"]
    started = time.monotonic()
    outcomes = fire(notifications)
    seconds = time.monotonic() - started
    after = stub.calls()["paths"]

    def delta(path: str) -> int:
        return int(after.get(path, 0)) - int(before.get(path, 0))

    reads = [delta(f"/api/v1/monitor/{FIRST_MONITOR_ID + m}") for m in range(monitors)]
    event_reads = sum(
        int(count) - int(before.get(path, 0))
        for path, count in after.items()
        if path.startswith("/api/v1/events/")
    )
    return Figures(
        label,
        reads,
        event_reads,
        seconds,
        Counter(o.status for o in outcomes),
        sorted(o.seconds for o in outcomes),
    )


def percentile(values: Sequence[float], share: float) -> float:
    return values[min(len(values) - 1, int(share * len(values)))] if values else 0.0


def print_figures(rows: Sequence[Figures]) -> None:
    print(
        f"{'mode':<10} {'monitor reads per monitor':>26} {'reads':>7} {'events':>7} "
        f"{'done in':>9} {'complete/partial/none':>22} {'enrich p50/p99':>16}"
    )
    for row in rows:
        per_monitor = (
            f"{min(row.reads)} / {statistics.median(row.reads):g} / {max(row.reads)} (min/med/max)"
        )
        statuses = "/".join(str(row.statuses.get(s, 0)) for s in ("complete", "partial", "none"))
        latency = (
            f"{percentile(row.latencies, 0.5) * 1000:.0f}/"
            f"{percentile(row.latencies, 0.99) * 1000:.0f} ms"
        )
        print(
            f"{row.label:<10} {per_monitor:>26} {sum(row.reads):>7} {row.event_reads:>7} "
            f"{row.seconds:>8.2f}s {statuses:>22} {latency:>16}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--monitors", type=int, default=DEFAULT_MONITORS)
    parser.add_argument("--groups", type=int, default=DEFAULT_GROUPS)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    parser.add_argument("--workers", type=int, default=1, help="enrichers, as worker processes")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="seconds per enrich")
    parser.add_argument(
        "--spread-s", type=float, default=0.0, help="notifications arrive over this many seconds"
    )
    parser.add_argument("--redis-url", help="share reads across --workers through this Redis")
    parser.add_argument(
        "--no-stub-limits",
        action="store_true",
        help="lift the stub's Datadog rate limits (get_monitors 3000 per 10 s) for the baseline",
    )
    args = parser.parse_args(argv)
    # The enricher's warnings (rate limits met, outages) are part of the picture.
    logging.basicConfig(level=logging.WARNING, format="  log: %(name)s: %(message)s")

    notifications = storm(args.monitors, args.groups)
    with stub_process() as stub:
        stub.define_monitors(
            [
                {
                    "id": FIRST_MONITOR_ID + m,
                    "name": f"Bank API errors {m}",
                    "tags": ["team:payments"],
                    "groups": {group_name(g): "Alert" for g in range(args.groups)},
                }
                for m in range(args.monitors)
            ]
        )
        if args.no_stub_limits:
            stub.set_rate_limit("get_monitors", limit=10**9, period_s=10)
        settings = Settings(dd_api_key="bench", dd_app_key="bench", dd_api_host=stub.url)
        client = redis.Redis.from_url(args.redis_url) if args.redis_url else None
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        print(
            f"storm: {len(notifications):,} notifications, {args.monitors} monitors x "
            f"{args.groups} groups over {args.spread_s:g}s, {args.threads} threads, "
            f"{args.workers} worker(s)"
            f"{' sharing through Redis' if client else ''}, budget {args.budget:g}s, stub "
            f"limits {'lifted' if args.no_stub_limits else 'as Datadog (get_monitors 3000/10s)'}"
        )
        rows = []
        for label, coalesce in (("shared", True), ("baseline", False)):
            enrichers = [
                Enricher(
                    settings,
                    redis_client=client,
                    key_prefix=prefix,
                    coalesce=coalesce,
                    # As many reads in flight as firing threads: neither mode waits for a slot.
                    max_concurrent_reads=args.threads,
                )
                for _ in range(args.workers)
            ]
            try:
                fire = direct_fire(
                    enrichers, threads=args.threads, budget_s=args.budget, spread_s=args.spread_s
                )
                rows.append(run(label, fire, notifications, stub, args.monitors))
            finally:
                for enricher in enrichers:
                    enricher.close()
        print_figures(rows)
        shared, baseline = rows
        if sum(shared.reads):
            print(
                f"baseline / shared: {sum(baseline.reads) / sum(shared.reads):.1f}x the "
                f"monitor reads, {baseline.seconds / shared.seconds:.1f}x the time"
            )
        if client is not None:
            keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
            if keys:
                client.delete(*keys)
            client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
