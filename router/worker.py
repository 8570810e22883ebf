"""`router worker`: takes deliveries off the queue and calls the services' callbacks.

Any number of worker processes, on any machines, share one consumer group. Each process runs
up to `ROUTER_WORKER_CONCURRENCY` deliveries at once in threads, and no more than
`ROUTER_PER_ENDPOINT_CONCURRENCY` to one endpoint, so a slow or dead endpoint holds up no
other. SIGTERM stops reading and lets in-flight attempts finish; whatever a killed worker held
stays pending in Redis and another worker reclaims it after `ROUTER_CLAIM_IDLE`.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import redis

from router.allowlist import CallbackAllowList
from router.callback_body import build_callback_body
from router.config import SHED_PARKED_AFTER_CLAIM_IDLE, Settings, format_duration
from router.delivery import AttemptResult, CallbackSender
from router.endpoints import EndpointGate
from router.enrich import Enricher, MonitorRead
from router.keys import RouterKeys
from router.logs import delivery_fields, flush_handlers
from router.metrics import MetricsWriter
from router.model import Enrichment, Notification
from router.notify import (
    Notifier,
    alert_sink,
    backlog_alert,
    breaker_alert,
    build_notifier,
    credentials_alerts,
    dead_letter_alert,
    oldest_waiting_ms,
)
from router.queue import AlsoWrite, Claim, Delivery, DeliveryQueue, OneTrip, Settled, now_ms
from router.reconcile import READ_BUDGET_S as RECONCILE_READ_BUDGET_S
from router.reconcile import Reconciler, ReconcilerLoop, ToldBook
from router.redis_conn import connect
from router.retry import RetryPolicy

log = logging.getLogger(__name__)

EnrichFn = Callable[[Notification, float], Enrichment]

# Short enough that a stop request or a due retry is noticed within half a second.
READ_BLOCK_MS = 500
# How often due retries are moved back to the stream.
MOVE_DUE_INTERVAL_S = 0.05
HEARTBEAT_INTERVAL_S = 5.0
# The Datadog health a worker publishes for /readyz disappears if no worker refreshes it.
HEALTH_TTL_S = 6 * HEARTBEAT_INTERVAL_S
# A delivery whose worker died this many times is poison, not bad luck: park it for a person.
MAX_RECLAIMS = 5
# A delivery waits in-process behind its busy endpoint only if it should start within this.
MAX_PARKED_WAIT_S = 2.0
# Parked deliveries per worker slot: bounds what one process holds back from other workers.
PARKED_PER_SLOT = 4
SHED_INTERVAL_S = 1.0
# A worker killed by SIGKILL leaves its entries behind; whichever worker beats next removes
# them once they are this old, so neither hash grows with every deploy.
_PRUNE_SILENT_WORKERS = """
-- KEYS[1]=heartbeats, KEYS[2]=Datadog health; ARGV[1]=cutoff_ms
local flat = redis.call('HGETALL', KEYS[1])
for i = 1, #flat, 2 do
  if (tonumber(flat[i + 1]) or 0) < tonumber(ARGV[1]) then
    redis.call('HDEL', KEYS[1], flat[i])
    redis.call('HDEL', KEYS[2], flat[i])
  end
end
for _, name in ipairs(redis.call('HKEYS', KEYS[2])) do
  if redis.call('HEXISTS', KEYS[1], name) == 0 then redis.call('HDEL', KEYS[2], name) end
end
"""
# Backoff while Redis is unreachable, so a restart storm does not hammer it.
REDIS_BACKOFF_MAX_S = 5.0
# The first wait before writing an attempt's result again; doubles up to REDIS_BACKOFF_MAX_S.
RESULT_RETRY_FIRST_S = 0.1


@dataclass(frozen=True)
class Ready:
    """A claimed delivery, enriched, waiting for (or holding) a slot at its endpoint."""

    claim: Claim
    delivery: Delivery
    enrichment: Enrichment


def _delivery_fields(delivery: Delivery, **more: Any) -> dict[str, Any]:
    """The ids every log line about a delivery carries (fields in JSON logs)."""
    return delivery_fields(delivery.id, delivery.notification, url=delivery.url, **more)


def _claim_fields(claim: Claim) -> dict[str, Any]:
    """A claim not loaded yet: only the delivery id is known."""
    return delivery_fields(claim.delivery_id)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}".lower()


class Worker:
    def __init__(
        self,
        settings: Settings,
        *,
        client: redis.Redis | None = None,
        sender: CallbackSender | None = None,
        enrich: EnrichFn | None = None,
        name: str | None = None,
        rng: Callable[[], float] = random.random,
        notifier: Notifier | None = None,
    ) -> None:
        secret = settings.require_worker()
        self.settings = settings
        self.redis = client or connect(settings.require_redis())
        self.queue = DeliveryQueue(
            self.redis, RouterKeys(settings.key_prefix), retention_s=settings.delivery_retention_s
        )
        self.metrics = MetricsWriter(self.redis, self.queue.keys)
        self.policy = RetryPolicy(settings.retry_schedule, rng=rng)
        self.allow = CallbackAllowList(settings.callback_allow)
        self.sender = sender or CallbackSender(secret, timeout_s=settings.delivery_timeout_s)
        # Slack when SLACK_WEBHOOK_URL is set; it never blocks the thread that calls it.
        self.notifier = notifier or build_notifier(settings, self.redis, keys=self.queue.keys)
        self.enricher: Enricher | None = None
        if enrich is None:
            # Without DD_API_KEY/DD_APP_KEY it says so once and returns status "none".
            enricher = self.enricher = Enricher(
                settings,
                redis_client=self.redis,
                # One read in flight per delivery thread at most: no queue behind the pool.
                max_concurrent_reads=settings.worker_concurrency,
            )

            def enrich(notification: Notification, budget_s: float) -> Enrichment:
                return enricher.enrich(notification, budget_s=budget_s)

        self.enrich = enrich
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.told = ToldBook(self.redis, self.queue.keys)
        self.reconciler: ReconcilerLoop | None = None
        if self.enricher is not None and self.enricher.enabled:
            reader = self.enricher

            def read_monitor(monitor_id: str) -> MonitorRead:
                return reader.read_monitor(monitor_id, budget_s=RECONCILE_READ_BUDGET_S)

            self.reconciler = ReconcilerLoop(
                Reconciler(
                    self.queue,
                    read_monitor,
                    keyword=settings.callback_keyword,
                    alert=alert_sink(self.notifier),
                ),
                name=self.name,
                interval_s=settings.reconcile_interval_s,
                heartbeat_url=settings.heartbeat_url,
            )
        self._stop = threading.Event()
        self._lock = threading.Condition()
        self._in_flight = 0
        # Claims read but not yet through the gate: each may still need a place in the line.
        self._admitting = 0
        self._reclaim_cursor = "0-0"
        self._gate: EndpointGate[Ready] = EndpointGate(
            settings.per_endpoint_concurrency,
            max_parked=settings.worker_concurrency * PARKED_PER_SLOT,
            max_wait_s=MAX_PARKED_WAIT_S,
        )
        self._prune_silent = self.redis.register_script(_PRUNE_SILENT_WORKERS)
        self._executor = ThreadPoolExecutor(
            max_workers=settings.worker_concurrency, thread_name_prefix="deliver"
        )

    # -- lifecycle -----------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        def handle(signum: int, _frame: FrameType | None) -> None:
            if self._stop.is_set():
                log.warning("second %s: exiting now; held deliveries will be reclaimed", signum)
                flush_handlers()
                os._exit(1)
            log.info("signal %s: finishing in-flight deliveries, then stopping", signum)
            self.stop()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def run(self) -> None:
        log.info(
            "worker %s started: concurrency %d (%d per endpoint), retry schedule %s",
            self.name,
            self.settings.worker_concurrency,
            self.settings.per_endpoint_concurrency,
            ",".join(format_duration(s) for s in self.settings.retry_schedule),
        )
        if self.reconciler is not None:
            self.reconciler.start()
        else:
            log.warning(
                "reconciler off: it reads monitors from Datadog, and DD_API_KEY/DD_APP_KEY are "
                "not set; a lost recovery stays until the monitor's next notification"
            )
        backoff = 0.0
        next_move = next_reclaim = next_heartbeat = next_shed = 0.0
        group_ready = False
        while not self._stop.is_set():
            try:
                if not group_ready:
                    self.queue.ensure_group()
                    group_ready = True
                now = time.monotonic()
                if now >= next_move:
                    self.queue.move_due()
                    next_move = now + MOVE_DUE_INTERVAL_S
                if now >= next_heartbeat:
                    self._heartbeat()
                    next_heartbeat = now + HEARTBEAT_INTERVAL_S
                if now >= next_reclaim:
                    self._dispatch_reclaimed()
                    next_reclaim = now + max(self.settings.claim_idle_s / 4, 1.0)
                if now >= next_shed:
                    self._shed_parked()
                    next_shed = now + SHED_INTERVAL_S
                self._dispatch_new()
                if backoff:
                    log.info("Redis is reachable again; worker %s resumes", self.name)
                backoff = 0.0
            except redis.ResponseError as exc:
                if "NOGROUP" in str(exc):
                    # The stream or group vanished (Redis restarted without persistence):
                    # the next turn of the loop creates it again.
                    log.warning("consumer group missing; creating it again")
                    group_ready = False
                    self._reclaim_cursor = "0-0"
                    continue
                log.exception("unexpected Redis error in the worker loop")
                backoff = self._back_off(backoff)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if not backoff:
                    log.error("Redis unreachable (%s); retrying with backoff", exc)
                group_ready = False
                backoff = self._back_off(backoff)
            except Exception:
                log.exception("unexpected error in the worker loop")
                backoff = self._back_off(backoff)
        self._drain()

    def _hand_back_parked(self) -> None:
        """Deliveries waiting behind a busy endpoint go back to the queue for another worker."""
        for ready in self._gate.drain():
            with suppress(redis.RedisError):
                self.queue.defer(ready.claim, ready.delivery.id, 0)

    def _heartbeat(self) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(self.queue.keys.worker_heartbeats, self.name, now_ms())
        if self.enricher is not None:
            health = {"worker": self.name, "at_ms": now_ms(), **self.enricher.health()}
            # One field per worker: /readyz merges them (a single key would flap between
            # whichever worker wrote last).
            pipe.hset(self.queue.keys.enrichment_health, self.name, json.dumps(health, default=str))
            pipe.pexpire(self.queue.keys.enrichment_health, int(HEALTH_TTL_S * 1000))
        pipe.execute()
        keys = [self.queue.keys.worker_heartbeats, self.queue.keys.enrichment_health]
        self._prune_silent(keys=keys, args=[now_ms() - int(HEALTH_TTL_S * 1000)])
        self._notify_trouble()

    def _notify_trouble(self) -> None:
        """Refused Datadog keys and an old backlog, seen by every worker, folded into one."""
        if self.enricher is not None:
            for alert in credentials_alerts(self.enricher.health()):
                self.notifier.notify(alert)
        oldest_ms = oldest_waiting_ms(self.queue)
        age_s = 0.0 if oldest_ms is None else (now_ms() - oldest_ms) / 1000
        if age_s > self.settings.notify_backlog_age_s:
            self.notifier.notify(backlog_alert(age_s, self.settings.notify_backlog_age_s))

    def _back_off(self, current: float) -> float:
        delay = min(max(current * 2, 0.1), REDIS_BACKOFF_MAX_S)
        self._stop.wait(delay)
        return delay

    def _drain(self) -> None:
        if self.reconciler is not None:
            self.reconciler.stop()
        self._hand_back_parked()
        with self._lock:
            if self._in_flight:
                log.info("waiting for %d in-flight deliveries", self._in_flight)
        self._executor.shutdown(wait=True)
        # Threads that were still admitting entries may have parked some meanwhile.
        self._hand_back_parked()
        self.sender.close()
        # After the deliveries in flight: their dead letters still get out.
        self.notifier.close()
        if self.enricher is not None:
            self.enricher.close()
        with suppress(redis.RedisError):
            self.redis.hdel(self.queue.keys.worker_heartbeats, self.name)
            self.redis.hdel(self.queue.keys.enrichment_health, self.name)
        log.info("worker %s stopped", self.name)

    # -- dispatch ------------------------------------------------------------------------

    def _free_slots(self) -> int:
        """How many entries to take now: free threads, but no more than the line in process
        could still take (counting claims on their way to it), so a burst beyond it stays in
        the stream for another worker instead of being read only to be deferred."""
        with self._lock:
            free = self.settings.worker_concurrency - self._in_flight
            admitting = self._admitting
        return min(free, self._gate.max_parked - self._gate.parked_total - admitting)

    def _dispatch_new(self) -> None:
        free = self._free_slots()
        if free <= 0:
            with self._lock:
                self._lock.wait(READ_BLOCK_MS / 1000)
            return
        for claim in self.queue.read(self.name, count=free, block_ms=READ_BLOCK_MS):
            self._submit(claim)

    def _dispatch_reclaimed(self) -> None:
        free = self._free_slots()
        if free <= 0:
            return
        min_idle_ms = int(self.settings.claim_idle_s * 1000)
        claims, self._reclaim_cursor = self.queue.reclaim(
            self.name, min_idle_ms, count=free, cursor=self._reclaim_cursor
        )
        for claim in claims:
            log.warning("reclaimed from a worker that stopped", extra=_claim_fields(claim))
            self._submit(claim)

    def _shed_parked(self) -> None:
        older_than = self.settings.claim_idle_s * SHED_PARKED_AFTER_CLAIM_IDLE
        for ready in self._gate.shed(older_than):
            log.info(
                "waited too long for its endpoint; back to the queue",
                extra=_delivery_fields(ready.delivery),
            )
            self.queue.defer(ready.claim, ready.delivery.id, 0)

    def _submit(self, claim: Claim) -> None:
        """Hand a claimed entry to a delivery thread; it holds one slot until finished."""
        with self._lock:
            self._in_flight += 1
            self._admitting += 1
        self._executor.submit(self._handle, claim)

    def _handle(self, claim: Claim) -> None:
        try:
            self._admit(claim)
        except Exception:
            # Left pending in Redis: a worker reclaims it after ROUTER_CLAIM_IDLE.
            log.exception("failed inside the worker; it stays queued", extra=_claim_fields(claim))
        finally:
            with self._lock:
                self._in_flight -= 1
                self._lock.notify_all()

    def _admit(self, claim: Claim) -> None:
        try:
            delivery = self._prepare(claim)
            if delivery is None:
                return
            # Enrich before taking one of the endpoint's slots: a slow Datadog API must not
            # hold the line of deliveries waiting for that service.
            ready = Ready(claim, delivery, self._enrichment(delivery))
            origin = _origin(delivery.url)
            decision = self._gate.admit(origin, ready)
        finally:
            with self._lock:
                self._admitting -= 1
        if decision == "parked":
            return
        if isinstance(decision, float):
            # The endpoint already has its share of this worker: look again later, unattempted.
            self.queue.defer(ready.claim, ready.delivery.id, int(decision * 1000))
            return
        # Then whatever waits behind the same endpoint, on this same thread.
        item: Ready | None = ready
        while item is not None:
            duration_s = None
            try:
                duration_s = self._attempt(item)
            except Exception:
                log.exception(
                    "failed inside the worker; it stays queued",
                    extra=_delivery_fields(item.delivery),
                )
            item = self._gate.finished(origin, duration_s)

    def _prepare(self, claim: Claim) -> Delivery | None:
        """The delivery to attempt, or None when this entry needed no attempt."""
        delivery = self.queue.load(claim.delivery_id)
        if delivery is None or delivery.status in ("delivered", "dead"):
            if self.queue.ack(claim) == "missing":
                log.warning(
                    "no record (purged, or Redis lost its data); dropped",
                    extra=_claim_fields(claim),
                )
            return None
        if delivery.reclaims > MAX_RECLAIMS:
            self._dead(
                claim,
                delivery,
                f"a worker stopped {delivery.reclaims} times while holding this delivery; "
                "parked so it cannot take more workers down",
            )
            return None
        if not self.allow.allows(delivery.url):
            self._dead(claim, delivery, self.allow.refusal(delivery.url))
            return None
        return delivery

    def _enrichment(self, delivery: Delivery) -> Enrichment:
        try:
            return self.enrich(delivery.notification, self.settings.enrich_budget_s)
        except Exception as exc:
            log.exception("enrichment failed; sending without it", extra=_delivery_fields(delivery))
            return Enrichment.none(f"enrichment failed: {exc}")

    def _attempt(self, ready: Ready) -> float:
        """One attempt and its consequence; returns how long the endpoint took, in seconds."""
        claim, delivery = ready.claim, ready.delivery
        if not self.queue.refresh(claim):
            # Taken over while it was enriched or parked: the new holder sends it, not us.
            log.warning("taken over by another worker; not sent", extra=_delivery_fields(delivery))
            return 0.0
        if delivery.attempts_this_round == 0:
            trigger = "replay" if delivery.replays else "first"
        else:
            trigger = "retry"
        body = build_callback_body(delivery.id, delivery.notification, ready.enrichment)
        result = self.sender.send(delivery.id, delivery.url, body)
        number = len(delivery.attempts) + 1
        attempt = result.to_dict(number, trigger)
        delivery.attempts.append(attempt)
        log.info(
            "attempt %d -> %s (%s) in %dms",
            number,
            result.outcome,
            result.status or result.error,
            result.duration_ms,
            extra=_delivery_fields(
                delivery,
                attempt=number,
                outcome=result.outcome,
                status=result.status,
                duration_ms=result.duration_ms,
            ),
        )
        also = self._writes_with_result(delivery, result, body)
        if result.outcome == "delivered":
            settled = self._write_result(
                lambda: self.queue.complete(claim, delivery, attempt=attempt, also=also), delivery
            )
            if settled == "done" and (alert := breaker_alert(delivery, ready.enrichment)):
                self.notifier.notify(alert)
        elif result.outcome == "permanent":
            reason = f"permanent failure: {result.error}"
            settled = self._write_result(
                lambda: self._dead(claim, delivery, reason, attempt=attempt, also=also), delivery
            )
        else:
            settled = self._write_result(
                lambda: self._retry_or_give_up(claim, delivery, result, attempt, also), delivery
            )
        if settled != "done":
            log.warning(
                "result arrived after another worker took it over or it ended (%s); "
                "kept in its history only",
                settled,
                extra=_delivery_fields(delivery),
            )
        return result.duration_ms / 1000

    def _write_result(self, write: Callable[[], Settled], delivery: Delivery) -> Settled:
        """Write an attempt's consequence, waiting out a Redis restart (bounded).

        Left unwritten, the delivery would stay claimed until ROUTER_CLAIM_IDLE and then be
        sent again by whoever reclaims it. A retried write is safe: the settle script acts only
        for the claim's holder, so one that already landed makes the next a late result."""
        deadline = time.monotonic() + self.settings.claim_idle_s
        delay = RESULT_RETRY_FIRST_S
        while True:
            try:
                return write()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if self._stop.is_set() or time.monotonic() + delay > deadline:
                    raise  # left claimed: reclaimed after ROUTER_CLAIM_IDLE, as before
                log.warning(
                    "Redis unreachable writing the result (%s); trying again in %.1fs",
                    exc,
                    delay,
                    extra=_delivery_fields(delivery),
                )
            self._stop.wait(delay)
            delay = min(delay * 2, REDIS_BACKOFF_MAX_S)

    def _writes_with_result(
        self, delivery: Delivery, result: AttemptResult, body: dict[str, Any]
    ) -> AlsoWrite:
        """What goes to Redis in the same round trip as the attempt's result: its metrics
        and, after a 2xx, what the callback now knows, for the reconciler (late or not: it
        was told). Written again with the result while Redis restarts, so an outage loses
        neither; a failure of theirs alone is logged, never the result's (the next
        notification or reconcile snapshot tells the callback again)."""

        def also(trip: OneTrip) -> None:
            self.metrics.attempt_into(trip.pipe, result.outcome, result.duration_ms / 1000)
            if result.outcome == "delivered":
                self.told.record_into(trip, delivery, body)

        return also

    def _retry_or_give_up(
        self,
        claim: Claim,
        delivery: Delivery,
        result: AttemptResult,
        attempt: dict[str, Any],
        also: AlsoWrite,
    ) -> Settled:
        delay = self.policy.next_delay(delivery.attempts_this_round, result.retry_after_s)
        if delay is None:
            reason = f"gave up after {delivery.attempts_this_round} attempts; last: {result.error}"
            return self._dead(claim, delivery, reason, attempt=attempt, also=also)
        due_ms = now_ms() + int(delay * 1000)
        return self.queue.schedule_retry(claim, delivery, due_ms, attempt=attempt, also=also)

    def _dead(
        self,
        claim: Claim,
        delivery: Delivery,
        reason: str,
        *,
        attempt: dict[str, Any] | None = None,
        also: AlsoWrite | None = None,
    ) -> Settled:
        settled = self.queue.dead_letter(claim, delivery, reason, attempt=attempt, also=also)
        if settled == "done":
            log.warning("dead-lettered: %s", reason, extra=_delivery_fields(delivery))
            self.notifier.notify(dead_letter_alert(delivery, reason))
        return settled
