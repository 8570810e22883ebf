"""/metrics: cluster-wide figures kept in Redis, read at scrape time, in Prometheus text format.

Every web and worker process adds to the same Redis hashes (`MetricsWriter`), and a scrape of
any web process reads them all (`QueueCollector`), so each answers for the whole cluster and
gunicorn needs no multiprocess mode. A histogram is a hash of bucket counters: each attempt is
counted once, under the smallest bound it fits, and the scrape makes the buckets cumulative.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import cast

import redis
from breaker_client.model import Record
from breaker_client.states import breaker_state
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from router.keys import BreakerKeys, RouterKeys
from router.queue import DeliveryQueue, now_ms

log = logging.getLogger(__name__)

PREFIX = "breaker_router"
# Workers beat every 5 s; one silent for six beats is gone (a SIGKILL leaves its entry).
WORKER_SILENT_AFTER_MS = 30_000
# Attempt durations from a callback on the same host (5 ms) to ROUTER_DELIVERY_TIMEOUT's 10 s.
ATTEMPT_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Breakers read per scrape at most: far above one router's breakers, and a scrape of that many
# is a few tens of ms of Redis work; `breakers_indexed` shows if there are more.
MAX_BREAKERS_COUNTED = 10_000
BREAKER_SCAN_PAGE = 1_000
# What decides a breaker's state now (breaker_client.states): all a scrape reads of a record.
# `updated_ms` is in every record: without it the record is gone (pruned since the scan).
STATE_FIELDS = ("state", "since_ms", "ramp_ms", "forced", "forced_until_ms", "updated_ms")
# Whether a breaker is in shadow mode (the record) and what it let through (its shadow hash).
SHADOW_FIELD = "shadow_since_ms"
# After a failed write, a process stops writing metrics this long: a stalled Redis must not
# add its connect timeout to every attempt and Datadog read (the work itself says it is down).
WRITE_PAUSE_S = 30.0
_SEP = "|"

# Counter name in Redis (`RouterKeys.stats`) -> (metric suffix, help).
COUNTERS = {
    "accepted": ("deliveries_accepted", "Deliveries queued from inbound notifications."),
    "duplicates": ("deliveries_duplicate", "Deliveries a sender sent again and we dropped."),
    "replayed": ("deliveries_replayed", "Dead deliveries a person replayed."),
    "reclaimed": ("deliveries_reclaimed", "Deliveries taken over from a worker that stopped."),
    "deferred": ("deliveries_deferred", "Attempts put off because an endpoint was busy."),
    "reconcile_runs": ("reconcile_runs", "Reconcile cycles the leader completed."),
    "reconcile_corrections": (
        "reconcile_corrections",
        "Reconcile snapshots queued because a callback was told something Datadog disagrees with.",
    ),
}
# Stats field -> `outcome` label of breaker_router_deliveries_total.
DELIVERY_OUTCOMES = {
    "delivered": "delivered",
    "retries_scheduled": "retried",
    "dead": "dead",
    "late_results": "late_result",
    "missing_records": "missing_record",
}


def bucket_for(seconds: float) -> str:
    """The field suffix of the smallest bound `seconds` fits under."""
    for bound in ATTEMPT_BUCKETS_S:
        if seconds <= bound:
            return repr(bound)
    return "+Inf"


class MetricsWriter:
    """What a process adds to the cluster-wide metrics; thread-safe. A write that fails is
    dropped (and writes pause for `WRITE_PAUSE_S`): a metric never fails or slows the work."""

    def __init__(
        self,
        client: redis.Redis,
        keys: RouterKeys,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = client
        self.keys = keys
        self._clock = clock
        self._paused_until = float("-inf")

    def notification(self, source: str, outcome: str, reason: str = "") -> None:
        """One inbound notification and what became of it (see router.inbound)."""
        field = notification_field(source, outcome, reason)
        self._write(lambda pipe: pipe.hincrby(self.keys.notifications_received, field, 1))

    def attempt(self, outcome: str, seconds: float) -> None:
        """One callback attempt that ended with `outcome` after `seconds`."""
        self._write(lambda pipe: self.attempt_into(pipe, outcome, seconds), transaction=True)

    def attempt_into(self, pipe: redis.client.Pipeline, outcome: str, seconds: float) -> None:
        """`attempt`, added to a pipeline the caller sends (with the delivery's result, so
        not paused: that write goes to Redis anyway)."""
        key = self.keys.attempt_seconds
        pipe.hincrby(key, f"{outcome}{_SEP}{bucket_for(seconds)}", 1)
        pipe.hincrbyfloat(key, f"{outcome}{_SEP}sum", seconds)

    def datadog_call(self, operation: str, error_kind: str | None = None) -> None:
        """One Datadog API request; `error_kind` when it failed (rate_limited, auth, ...)."""
        key = self.keys.datadog_calls

        def write(pipe: redis.client.Pipeline) -> None:
            pipe.hincrby(key, f"calls{_SEP}{operation}", 1)
            if error_kind is not None:
                pipe.hincrby(key, f"errors{_SEP}{operation}{_SEP}{error_kind}", 1)

        self._write(write)

    def datadog_wait(self, operation: str, seconds: float) -> None:
        """A read waited `seconds` for a Datadog rate limit to reset."""
        key = self.keys.datadog_calls

        def write(pipe: redis.client.Pipeline) -> None:
            pipe.hincrby(key, f"waits{_SEP}{operation}", 1)
            pipe.hincrbyfloat(key, f"wait_seconds{_SEP}{operation}", seconds)

        self._write(write)

    def _write(
        self, write: Callable[[redis.client.Pipeline], object], *, transaction: bool = False
    ) -> None:
        if self._clock() < self._paused_until:
            return
        try:
            pipe = self.redis.pipeline(transaction=transaction)
            write(pipe)
            pipe.execute()
        except redis.RedisError as exc:
            self._paused_until = self._clock() + WRITE_PAUSE_S
            log.warning("metrics not written for %.0fs, Redis failed: %s", WRITE_PAUSE_S, exc)


def notification_field(source: str, outcome: str, reason: str = "") -> str:
    """The field of `RouterKeys.notifications_received` a notification is counted under."""
    return _SEP.join((source, outcome, reason))


def _entry_ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


def oldest_entry_ms(queue: DeliveryQueue) -> dict[str, int | None]:
    """When the oldest in-flight (pending) and the oldest ready stream entry entered the stream
    (a retry or a deferral enters it again), or None when there is none."""
    keys = queue.keys
    try:
        oldest_pending = cast(dict[str, str | None], queue.redis.xpending(keys.stream, keys.group))
        groups = cast(list[dict[str, str]], queue.redis.xinfo_groups(keys.stream))
    except redis.ResponseError:
        oldest_pending, groups = {"min": None}, []  # no stream or no group: nothing claimed yet
    last_read = next((g["last-delivered-id"] for g in groups if g["name"] == keys.group), "0-0")
    first_ready = cast(
        list[tuple[str, dict[str, str]]],
        queue.redis.xrange(keys.stream, min=f"({last_read}", max="+", count=1),
    )
    pending_id = oldest_pending.get("min")
    return {
        "ready": _entry_ms(first_ready[0][0]) if first_ready else None,
        "in_flight": _entry_ms(pending_id) if pending_id else None,
    }


@dataclass
class BreakerCounts:
    """What a scrape reads of the breakers (states of at most `MAX_BREAKERS_COUNTED`)."""

    indexed: int = 0
    states: Counter[str] = dataclasses.field(default_factory=Counter)
    refusing: int = 0
    shadowed: int = 0
    # (name, key or "") -> calls shadow mode let through that the breaker would have refused.
    shadow_refusals: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)


def count_breakers(client: redis.Redis, keys: BreakerKeys, at_ms: int) -> BreakerCounts:
    """The breakers in the index, counted by effective state, and their shadow counts."""
    counts = BreakerCounts(indexed=int(client.scard(keys.index)))
    members: dict[str, None] = {}
    cursor = 0
    while True:
        cursor, page = cast(
            tuple[int, list[str]], client.sscan(keys.index, cursor, count=BREAKER_SCAN_PAGE)
        )
        members.update(dict.fromkeys(page))
        if cursor == 0 or len(members) >= MAX_BREAKERS_COUNTED:
            break
    chosen = list(members)[:MAX_BREAKERS_COUNTED]
    pipe = client.pipeline(transaction=False)
    for member in chosen:
        pipe.hmget(keys.record(member), (*STATE_FIELDS, SHADOW_FIELD))
        pipe.hget(keys.shadow(member), "total")
    replies = pipe.execute()
    for member, values, total in zip(chosen, replies[::2], replies[1::2], strict=True):
        fields = {name: v for name, v in zip(STATE_FIELDS, values, strict=False) if v is not None}
        if not fields:
            continue  # pruned between the scan and the read
        # The record's other fields (reasons, history) do not change its state: not read.
        state = breaker_state(Record.from_hash(member, fields), at_ms)
        counts.states[state.state] += 1
        counts.refusing += state.open
        counts.shadowed += values[-1] is not None
        if total:
            counts.shadow_refusals[(state.name, state.key or "")] = int(total)
    return counts


def _labelled(fields: dict[str, str], parts: int) -> Iterator[tuple[list[str], float]]:
    for field, raw in fields.items():
        labels = field.split(_SEP)
        if len(labels) == parts:
            yield labels, float(raw)


class QueueCollector(Collector):
    """Reads every figure from Redis when scraped; `breakers` adds the breakers' states."""

    def __init__(
        self,
        queue: DeliveryQueue,
        breakers: BreakerKeys | None = None,
        *,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.queue = queue
        self.breakers = breakers
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(f"{PREFIX}_redis_up", "1 if Redis answered this scrape.")
        try:
            metrics = list(self._collect())
        except redis.RedisError as exc:
            log.warning("/metrics: Redis failed: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from metrics

    def _collect(self) -> Iterator[Metric]:
        queue, keys, now = self.queue, self.queue.keys, self._clock()
        depths = queue.depths()
        oldest = oldest_entry_ms(queue)
        pipe = queue.redis.pipeline(transaction=False)
        pipe.hgetall(keys.stats)
        pipe.hvals(keys.worker_heartbeats)
        pipe.hgetall(keys.notifications_received)
        pipe.hgetall(keys.attempt_seconds)
        pipe.hgetall(keys.datadog_calls)
        pipe.hget(keys.reconcile_status, "last_success_ms")
        stats, beats, received, attempts, datadog, last_success = pipe.execute()
        stats = {str(k): int(v) for k, v in stats.items()}

        depth = GaugeMetricFamily(
            f"{PREFIX}_queue_depth", "Deliveries by queue state.", labels=["state"]
        )
        for state, value in depths.items():
            depth.add_metric([state], value)
        yield depth
        age = GaugeMetricFamily(
            f"{PREFIX}_queue_oldest_age_seconds",
            "Age of the oldest stream entry that is ready or in flight (0 when none).",
            labels=["state"],
        )
        for state, since_ms in oldest.items():
            age.add_metric([state], 0 if since_ms is None else max(0, now - since_ms) / 1000)
        yield age
        recent = now - WORKER_SILENT_AFTER_MS
        workers = sum(1 for beat in beats if int(beat) >= recent)
        yield GaugeMetricFamily(
            f"{PREFIX}_workers", "Workers that sent a heartbeat recently.", value=workers
        )
        for field, (suffix, help_text) in COUNTERS.items():
            yield CounterMetricFamily(f"{PREFIX}_{suffix}", help_text, value=stats.get(field, 0))
        deliveries = CounterMetricFamily(
            f"{PREFIX}_deliveries",
            "What became of delivery attempts, cluster-wide.",
            labels=["outcome"],
        )
        for field, outcome in DELIVERY_OUTCOMES.items():
            deliveries.add_metric([outcome], stats.get(field, 0))
        yield deliveries
        notifications = CounterMetricFamily(
            f"{PREFIX}_notifications_received",
            "Inbound notifications by source and what the router answered.",
            labels=["source", "outcome", "reason"],
        )
        for labels, count in sorted(_labelled(received, 3)):
            notifications.add_metric(labels, count)
        yield notifications
        yield self._attempt_histogram(attempts)
        yield from self._datadog(datadog)
        if last_success:
            yield GaugeMetricFamily(
                f"{PREFIX}_reconcile_last_success_timestamp_seconds",
                "When the last reconcile cycle succeeded (Unix time); absent before the first.",
                value=int(last_success) / 1000,
            )
        if self.breakers is not None:
            yield from self._breakers(self.breakers, now)

    def _attempt_histogram(self, fields: dict[str, str]) -> Metric:
        histogram = HistogramMetricFamily(
            f"{PREFIX}_attempt_duration_seconds",
            "How long callback attempts took, by outcome (delivered, retry, permanent).",
            labels=["outcome"],
        )
        bounds = [*ATTEMPT_BUCKETS_S, math.inf]
        counts: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(bounds))
        sums: dict[str, float] = defaultdict(float)
        for (outcome, le), value in _labelled(fields, 2):
            if le == "sum":
                sums[outcome] = value
                continue
            # A bound no longer in the list counts under the next one up: still cumulative.
            upper = float(le)
            index = next(i for i, bound in enumerate(bounds) if upper <= bound)
            counts[outcome][index] += value
        for outcome in sorted(counts):
            running, buckets = 0.0, []
            for bound, count in zip(bounds, counts[outcome], strict=True):
                running += count
                buckets.append(("+Inf" if bound == math.inf else repr(bound), running))
            histogram.add_metric([outcome], buckets, sums[outcome])
        return histogram

    def _datadog(self, fields: dict[str, str]) -> Iterator[Metric]:
        calls = CounterMetricFamily(
            f"{PREFIX}_datadog_api_calls",
            "Requests made to the Datadog API, by operation.",
            labels=["operation"],
        )
        errors = CounterMetricFamily(
            f"{PREFIX}_datadog_api_errors",
            "Datadog API requests that failed, by operation and kind.",
            labels=["operation", "kind"],
        )
        waits = CounterMetricFamily(
            f"{PREFIX}_datadog_rate_limit_waits",
            "Reads that waited for a Datadog rate limit to reset.",
            labels=["operation"],
        )
        waited = CounterMetricFamily(
            f"{PREFIX}_datadog_rate_limit_wait_seconds",
            "Time reads spent waiting for Datadog rate limits to reset.",
            labels=["operation"],
        )
        families = {"calls": calls, "errors": errors, "waits": waits, "wait_seconds": waited}
        for field, raw in sorted(fields.items()):
            kind, _, labels = field.partition(_SEP)
            family = families.get(kind)
            if family is not None:
                family.add_metric(labels.split(_SEP), float(raw))
        yield from families.values()

    def _breakers(self, keys: BreakerKeys, now: int) -> Iterator[Metric]:
        counts = count_breakers(self.queue.redis, keys, now)
        yield GaugeMetricFamily(
            f"{PREFIX}_breakers_open",
            "Breakers refusing calls now (open or forced open), in the router's Redis.",
            value=counts.refusing,
        )
        by_state = GaugeMetricFamily(
            f"{PREFIX}_breakers", "Breakers by effective state.", labels=["state"]
        )
        for state, count in sorted(counts.states.items()):
            by_state.add_metric([state], count)
        yield by_state
        yield GaugeMetricFamily(
            f"{PREFIX}_breakers_indexed",
            f"Breakers in the index; states are counted for at most {MAX_BREAKERS_COUNTED}.",
            value=counts.indexed,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_breakers_shadow",
            "Breakers in shadow mode (a keyless one covers every key of its name).",
            value=counts.shadowed,
        )
        refusals = CounterMetricFamily(
            f"{PREFIX}_breaker_shadow_refusals",
            "Calls shadow mode let through that the breaker would have refused, by breaker and "
            "key ('' for the keyless breaker); written by services every few seconds.",
            labels=["breaker", "key"],
        )
        for (name, key), total in sorted(counts.shadow_refusals.items()):
            refusals.add_metric([name, key], total)
        yield refusals


def render(queue: DeliveryQueue, breakers: BreakerKeys | None = None) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(queue, breakers))
    return generate_latest(registry)
