"""/metrics: cluster-wide figures read from Redis at scrape time, in Prometheus text format.

Counters live in Redis (`RouterKeys.stats`), written by every web and worker process, so any
web process answers for the whole cluster and gunicorn needs no multiprocess mode.
"""

from __future__ import annotations

from collections.abc import Iterator

import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from router.queue import DeliveryQueue, now_ms

PREFIX = "breaker_router"
# Workers beat every 5 s; one silent for six beats is gone (a SIGKILL leaves its entry).
WORKER_SILENT_AFTER_MS = 30_000

# Counter name in Redis -> (metric suffix, help).
COUNTERS = {
    "accepted": ("deliveries_accepted", "Deliveries queued from inbound notifications."),
    "duplicates": ("deliveries_duplicate", "Deliveries a sender sent again and we dropped."),
    "delivered": ("deliveries_delivered", "Deliveries a callback acknowledged with 2xx."),
    "retries_scheduled": ("delivery_retries_scheduled", "Failed attempts scheduled to retry."),
    "dead": ("deliveries_dead_lettered", "Deliveries moved to the dead-letter stream."),
    "replayed": ("deliveries_replayed", "Dead deliveries a person replayed."),
    "reclaimed": ("deliveries_reclaimed", "Deliveries taken over from a worker that stopped."),
    "deferred": ("deliveries_deferred", "Attempts put off because an endpoint was busy."),
    "notifications_without_callback": (
        "notifications_without_callback",
        "Notifications accepted that held no callback line.",
    ),
}


class QueueCollector(Collector):
    def __init__(self, queue: DeliveryQueue) -> None:
        self.queue = queue

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(f"{PREFIX}_redis_up", "1 if Redis answered this scrape.")
        try:
            depths = self.queue.depths()
            stats = self.queue.stats()
            beats = self.queue.redis.hvals(self.queue.keys.worker_heartbeats)
        except redis.RedisError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        depth = GaugeMetricFamily(
            f"{PREFIX}_queue_depth", "Deliveries by queue state.", labels=["state"]
        )
        for state, value in depths.items():
            depth.add_metric([state], value)
        yield depth
        recent = now_ms() - WORKER_SILENT_AFTER_MS
        workers = sum(1 for beat in beats if int(beat) >= recent)
        yield GaugeMetricFamily(
            f"{PREFIX}_workers", "Workers that sent a heartbeat recently.", value=workers
        )
        for field, (suffix, help_text) in COUNTERS.items():
            yield CounterMetricFamily(f"{PREFIX}_{suffix}", help_text, value=stats.get(field, 0))


def render(queue: DeliveryQueue) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(queue))
    return generate_latest(registry)
