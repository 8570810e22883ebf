"""Storm through the whole router: webhook POSTs -> Redis queue -> workers -> signed callbacks.

Every group of every monitor goes red at once (default 100 monitors x 100 groups = 10,000
notifications). They are POSTed to gunicorn as Datadog would, workers enrich them against
the stub Datadog API and call one callback receiver. Prints the Datadog monitor reads per
monitor and the time until every delivery has arrived; the baseline, in the same run, is
the same storm with enrichment off (no Datadog keys), so the ratio is what enrichment costs.

    PYTHONPATH=. .venv/bin/python bench/storm_full_path.py [--monitors 100] [--groups 100]
                                     [--workers 2] [--senders 16] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

import httpx
import redis
from _common import delete_prefixed, redis_url, unique_prefix

from bench.enrich_storm import FIRST_MONITOR_ID, group_name, stub_process
from router.datadog_stub import StubClient
from router.demo import datadog_payload
from router.devserver import web_command
from tests.conftest import free_port
from tests.support import (
    INBOUND_TOKEN,
    Receiver,
    process,
    router_command,
    router_env,
    running_receiver,
    wait_for,
    wait_http,
)

# Long enough for 10,000 deliveries on a loaded 2-core machine; the run stops by itself.
DELIVERY_DEADLINE_S = 600.0


@dataclass(frozen=True)
class Run:
    label: str
    accepted_s: float
    delivered_s: float
    monitor_reads: list[int]
    enrichment: Counter[str]


def payloads(callback: str, monitors: int, groups: int) -> list[dict[str, object]]:
    now_ms = int(time.time() * 1000)
    return [
        datadog_payload(
            callback,
            event_id=str(6_000_000_000_000_000_000 + m * groups + g),
            monitor_id=str(FIRST_MONITOR_ID + m),
            scope=group_name(g),
            date_ms=now_ms,
        )
        for m in range(monitors)
        for g in range(groups)
    ]


@contextmanager
def router_processes(env: dict[str, str], workers: int, logs: Path) -> Iterator[str]:
    port = free_port()
    logs.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        stack.enter_context(process(web_command(port), env, log_path=logs / "web.log"))
        for n in range(workers):
            stack.enter_context(
                process(router_command("worker"), env, log_path=logs / f"worker-{n}.log")
            )
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/readyz")
        yield base


def run_storm(
    label: str,
    *,
    stub: StubClient,
    receiver: Receiver,
    monitors: int,
    groups: int,
    workers: int,
    senders: int,
    enrich: bool,
    logs: Path,
) -> Run:
    prefix = unique_prefix()
    extra = {"ROUTER_LOG_LEVEL": "WARNING", "ROUTER_CALLBACK_ALLOW": receiver.url}
    if enrich:
        extra |= {"DD_API_HOST": stub.url, "DD_API_KEY": "bench", "DD_APP_KEY": "bench"}
    env = router_env(redis_url(), prefix, **extra)
    env.pop("ROUTER_RETRY_SCHEDULE")  # the production default
    bodies = payloads(f"{receiver.url}/cb", monitors, groups)
    receiver.requests.clear()
    before = stub.calls()["paths"]
    try:
        with (
            router_processes(env, workers, logs / label) as base,
            httpx.Client(timeout=30, limits=httpx.Limits(max_connections=senders)) as http,
        ):
            headers = {"Authorization": f"Bearer {INBOUND_TOKEN}"}
            started = time.monotonic()

            def send(body: dict[str, object]) -> int:
                return http.post(f"{base}/webhooks/datadog", json=body, headers=headers).status_code

            with ThreadPoolExecutor(senders) as pool:
                statuses = Counter(pool.map(send, bodies))
            accepted_s = time.monotonic() - started
            if statuses != Counter({202: len(bodies)}):
                raise SystemExit(f"{label}: unexpected answers {dict(statuses)}")
            wait_for(
                lambda: len(receiver.requests) >= len(bodies),
                timeout=DELIVERY_DEADLINE_S,
                interval=0.05,
                what=f"{len(bodies)} callbacks",
            )
            delivered_s = time.monotonic() - started
    finally:
        delete_prefixed(redis.Redis.from_url(redis_url()), prefix)
    after = stub.calls()["paths"]
    reads = [
        after.get(path, 0) - before.get(path, 0)
        for path in (f"/api/v1/monitor/{FIRST_MONITOR_ID + m}" for m in range(monitors))
    ]
    enrichment = Counter(r.json()["enrichment"]["status"] for r in receiver.requests)
    return Run(label, accepted_s, delivered_s, reads, enrichment)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--monitors", type=int, default=100)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2, help="router worker processes")
    parser.add_argument("--senders", type=int, default=16, help="concurrent webhook POSTs")
    parser.add_argument("--quick", action="store_true", help="20 monitors x 25 groups")
    args = parser.parse_args()
    if args.quick:
        args.monitors, args.groups = 20, 25
    total = args.monitors * args.groups
    with (
        TemporaryDirectory(prefix="storm-") as tmp,
        stub_process() as stub,
        running_receiver() as receiver,
    ):
        stub.define_monitors(
            [
                {
                    "id": str(FIRST_MONITOR_ID + m),
                    "name": f"Bank API errors {m}",
                    "groups": {group_name(g): "Alert" for g in range(args.groups)},
                }
                for m in range(args.monitors)
            ]
        )
        common = dict(
            stub=stub,
            receiver=receiver,
            monitors=args.monitors,
            groups=args.groups,
            workers=args.workers,
            senders=args.senders,
            logs=Path(tmp),
        )
        enriched = run_storm("enriched", enrich=True, **common)  # type: ignore[arg-type]
        baseline = run_storm("no enrichment", enrich=False, **common)  # type: ignore[arg-type]
    print(
        f"{total} notifications ({args.monitors} monitors x {args.groups} groups, all Alert), "
        f"{args.senders} concurrent POSTs, gunicorn 2 workers, {args.workers} router workers"
    )
    for run in (enriched, baseline):
        reads = run.monitor_reads
        print(
            f"{run.label:<14} all 202 after {run.accepted_s:6.1f} s   all delivered after "
            f"{run.delivered_s:6.1f} s   monitor reads per monitor min/median/max "
            f"{min(reads)}/{statistics.median(reads):.0f}/{max(reads)}   "
            f"enrichment {dict(run.enrichment)}"
        )
    ratio = enriched.delivered_s / baseline.delivered_s
    print(f"time to deliver everything, enriched / not enriched: {ratio:.2f}x")


if __name__ == "__main__":
    main()
