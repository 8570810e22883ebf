"""Storm through the whole router: webhook POSTs -> Redis queue -> workers -> signed callbacks.

Every group of every monitor goes red at once: per size, size / --groups monitors of --groups
groups (1,000, 10,000 and 30,000 notifications over 10, 100 and 300 monitors of 100 groups).
They are POSTed to the router web (gunicorn with the router's settings) as Datadog would,
`--senders` at a time over kept-alive connections (bench/_http.py: a sender that costs little
CPU); `--workers` router workers enrich them against the stub Datadog API (its own process,
Datadog's rate limits) and call a callback sink (its own process). Each size gets its own
redis-server appending every second. Printed per size: when every POST was answered 202,
when the last callback arrived, the Datadog API calls, the workers' memory, Redis's memory
after. The baseline, in the same run, is the same POSTs to a bare Flask endpoint under the
same gunicorn settings (bench/_bare_app.py): the time no router on this machine can beat.

    .venv/bin/python bench/storm_full_path.py [--sizes 1000,10000,30000] [--groups 100]
                                              [--workers 2] [--senders 16] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

import httpx
import redis
from _common import ROOT, unique_prefix
from _http import post_request, send_all
from _processes import appending_redis, children, cpu_seconds, memory_mb

from bench.enrich_storm import FIRST_MONITOR_ID, group_name, stub_process
from router.datadog_stub import StubClient
from router.demo import datadog_payload
from router.devserver import web_command
from router.keys import RouterKeys
from tests.conftest import free_port
from tests.support import INBOUND_TOKEN, process, router_command, router_env, wait_for, wait_http

DEFAULT_SIZES = "1000,10000,30000"
# Long enough for 30,000 deliveries on a loaded 2-core machine; the run stops by itself.
DELIVERY_DEADLINE_S = 900.0
ROUTE = "/webhooks/datadog"
BARE_APP = "bench._bare_app:create_app()"


@dataclass(frozen=True)
class Run:
    size: int
    monitors: int
    groups: int
    bare_s: float
    accepted_s: float
    delivered_s: float
    api_calls: Counter[str]
    monitor_reads: list[int]
    worker_rss_mb: list[float]
    worker_peak_mb: list[float]
    redis_before_mb: float
    redis_after_mb: float
    enrichment: dict[str, int]
    # CPU seconds over the storm: web (gunicorn's workers), router workers, redis-server.
    cpu_s: tuple[float, float, float]
    # The queue's counters (RouterKeys.stats): deferred, reclaimed, retries_scheduled, ...
    queue_stats: dict[str, int]

    def line(self) -> str:
        reads = self.monitor_reads
        per_delivery_b = (self.redis_after_mb - self.redis_before_mb) * 1e6 / self.size
        return (
            f"{self.size:>6} ({self.monitors:>3} x {self.groups})   "
            f"bare POSTs {self.bare_s:6.1f} s   all 202 {self.accepted_s:6.1f} s   "
            f"last delivery {self.delivered_s:6.1f} s "
            f"({self.delivered_s / self.bare_s:4.1f}x bare)   "
            f"Datadog calls {sum(self.api_calls.values()):>5} (monitor reads per monitor "
            f"{min(reads)}/{statistics.median(reads):.0f}/{max(reads)})   "
            f"worker RSS {max(self.worker_rss_mb):5.1f} MB "
            f"(peak {max(self.worker_peak_mb):5.1f})   "
            f"Redis {self.redis_after_mb:6.1f} MB after ({per_delivery_b:,.0f} B per delivery)   "
            f"enrichment {self.enrichment}   deferred {self.queue_stats.get('deferred', 0)}, "
            f"retried {self.queue_stats.get('retries_scheduled', 0)}, "
            f"reclaimed {self.queue_stats.get('reclaimed', 0)}   CPU per notification: "
            + ", ".join(
                f"{name} {seconds / self.size * 1e3:.2f} ms"
                for name, seconds in zip(("web", "workers", "Redis"), self.cpu_s, strict=True)
            )
        )


def requests_for(sink_url: str, monitors: int, groups: int) -> list[bytes]:
    now_ms = int(time.time() * 1000)
    headers = {"Authorization": f"Bearer {INBOUND_TOKEN}"}
    return [
        post_request(
            ROUTE,
            json.dumps(
                datadog_payload(
                    f"{sink_url}/cb",
                    event_id=str(6_000_000_000_000_000_000 + m * groups + g),
                    monitor_id=str(FIRST_MONITOR_ID + m),
                    scope=group_name(g),
                    date_ms=now_ms,
                )
            ).encode(),
            headers,
        )
        for m in range(monitors)
        for g in range(groups)
    ]


@contextmanager
def callback_sink(logs: Path) -> Iterator[str]:
    """bench/_http.py's sink in its own process; its URL."""
    port = free_port()
    args = [sys.executable, str(ROOT / "bench" / "_http.py"), "--port", str(port)]
    with process(args, {}, log_path=logs / "sink.log"):
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/counts")
        yield url


def sink_counts(url: str) -> dict[str, object]:
    return httpx.get(f"{url}/counts", timeout=10).json()  # type: ignore[no-any-return]


def time_bare_posts(requests: list[bytes], senders: int, logs: Path) -> float:
    """The same POSTs to the bare endpoint under the same gunicorn settings: the floor."""
    port = free_port()
    with process(web_command(port, app=BARE_APP), {}, log_path=logs / "bare.log"):
        wait_http(f"http://127.0.0.1:{port}/readyz")
        started = time.monotonic()
        statuses = Counter(send_all("127.0.0.1", port, requests, senders))
        elapsed = time.monotonic() - started
    if statuses != Counter({202: len(requests)}):
        raise SystemExit(f"bare endpoint: unexpected answers {dict(statuses)}")
    return elapsed


def run_storm(
    size: int, groups: int, *, stub: StubClient, sink: str, workers: int, senders: int, logs: Path
) -> Run:
    monitors = size // groups
    requests = requests_for(sink, monitors, groups)
    bare_s = time_bare_posts(requests, senders, logs)
    with (
        TemporaryDirectory(prefix="storm-redis-") as data_dir,
        appending_redis(Path(data_dir)) as url,
    ):
        client = redis.Redis.from_url(url)
        prefix = unique_prefix()
        env = router_env(
            url,
            prefix,
            ROUTER_LOG_LEVEL="WARNING",
            ROUTER_CALLBACK_ALLOW=sink,
            DD_API_HOST=stub.url,
            DD_API_KEY="bench",
            DD_APP_KEY="bench",
        )
        env.pop("ROUTER_RETRY_SCHEDULE")  # the production default
        calls_before = Counter(stub.calls()["paths"])
        delivered_before = int(sink_counts(sink)["count"])  # type: ignore[call-overload]
        enrichment_before = Counter(sink_counts(sink)["enrichment"])  # type: ignore[arg-type]
        web_port = free_port()
        redis_pid = int(client.info("server")["process_id"])
        with ExitStack() as stack:
            web = stack.enter_context(
                process(web_command(web_port), env, log_path=logs / "web.log")
            )
            worker_procs = [
                stack.enter_context(
                    process(router_command("worker"), env, log_path=logs / f"worker-{n}.log")
                )
                for n in range(workers)
            ]
            wait_http(f"http://127.0.0.1:{web_port}/readyz")
            redis_before_mb = int(client.info("memory")["used_memory"]) / 1e6
            groups_of_pids = [children(web.pid), [p.pid for p in worker_procs], [redis_pid]]
            cpu_before = [cpu_seconds(pids) for pids in groups_of_pids]
            started_wall, started = time.time(), time.monotonic()
            statuses = Counter(send_all("127.0.0.1", web_port, requests, senders))
            accepted_s = time.monotonic() - started
            if statuses != Counter({202: size}):
                raise SystemExit(f"{size}: unexpected answers {dict(statuses)}")
            wait_for(
                lambda: int(sink_counts(sink)["count"]) - delivered_before >= size,  # type: ignore[call-overload]
                timeout=DELIVERY_DEADLINE_S,
                interval=0.1,
                what=f"{size} callbacks",
            )
            counts = sink_counts(sink)
            delivered_s = float(counts["last_at"]) - started_wall  # type: ignore[arg-type]
            memory = [memory_mb(proc.pid) for proc in worker_procs]
            web_cpu, workers_cpu, redis_cpu = (
                cpu_seconds(pids) - before
                for pids, before in zip(groups_of_pids, cpu_before, strict=True)
            )
            redis_after_mb = int(client.info("memory")["used_memory"]) / 1e6
            queue_stats = {
                str(k, "utf-8"): int(v) for k, v in client.hgetall(RouterKeys(prefix).stats).items()
            }
        calls = Counter(stub.calls()["paths"])
        calls.subtract(calls_before)
        enrichment = Counter(counts["enrichment"])  # type: ignore[arg-type]
        enrichment.subtract(enrichment_before)
    return Run(
        size=size,
        monitors=monitors,
        groups=groups,
        bare_s=bare_s,
        accepted_s=accepted_s,
        delivered_s=delivered_s,
        api_calls=+calls,
        monitor_reads=[calls[f"/api/v1/monitor/{FIRST_MONITOR_ID + m}"] for m in range(monitors)],
        worker_rss_mb=[rss for rss, _ in memory],
        worker_peak_mb=[peak for _, peak in memory],
        redis_before_mb=redis_before_mb,
        redis_after_mb=redis_after_mb,
        enrichment=dict(+enrichment),
        cpu_s=(web_cpu, workers_cpu, redis_cpu),
        queue_stats=queue_stats,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="notifications per storm")
    parser.add_argument("--groups", type=int, default=100, help="groups per monitor")
    parser.add_argument("--workers", type=int, default=2, help="router worker processes")
    parser.add_argument("--senders", type=int, default=16, help="concurrent webhook POSTs")
    parser.add_argument("--quick", action="store_true", help="one storm of 20 monitors x 25")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    if args.quick:
        sizes, args.groups = [500], 25
    if any(size % args.groups for size in sizes):
        parser.error(f"every size must be a multiple of --groups ({args.groups})")
    runs = []
    with (
        TemporaryDirectory(prefix="storm-") as tmp,
        stub_process() as stub,
        callback_sink(Path(tmp)) as sink,
    ):
        stub.define_monitors(
            [
                {
                    "id": str(FIRST_MONITOR_ID + m),
                    "name": f"Bank API errors {m}",
                    "groups": {group_name(g): "Alert" for g in range(args.groups)},
                }
                for m in range(max(sizes) // args.groups)
            ]
        )
        for size in sizes:
            logs = Path(tmp) / str(size)
            logs.mkdir()
            runs.append(
                run_storm(
                    size,
                    args.groups,
                    stub=stub,
                    sink=sink,
                    workers=args.workers,
                    senders=args.senders,
                    logs=logs,
                )
            )
    print(
        f"storm: every group of every monitor in Alert at once; {args.senders} concurrent POSTs "
        f"over kept-alive connections; router web under router.gunicorn_conf (2 processes), "
        f"{args.workers} router workers, enrichment against the stub Datadog API; "
        "redis-server --appendonly yes --appendfsync everysec; times from the first POST"
    )
    for run in runs:
        print(run.line())
    if len(runs) > 1:
        first, last = runs[0], runs[-1]
        growth = (last.delivered_s / first.delivered_s) / (last.size / first.size)
        print(
            f"from {first.size} to {last.size} notifications ({last.size / first.size:.0f}x): "
            f"time to the last delivery {last.delivered_s / first.delivered_s:.1f}x "
            f"({growth:.2f}x linear), Datadog calls "
            f"{sum(last.api_calls.values()) / max(1, sum(first.api_calls.values())):.1f}x, "
            f"Redis memory {last.redis_after_mb / first.redis_after_mb:.1f}x"
        )


if __name__ == "__main__":
    main()
