"""`Enricher`: what the Datadog API adds to a notification, within each delivery's time budget.

Policy, in the order it matters:
- A breaker that opens late costs more than one that opens with less context: `enrich` never
  takes longer than `budget_s`, and whatever it could not read becomes a `problems` line
  (status `partial`, or `none` when nothing was read) instead of a delay or an exception.
- A storm must not cost a read per notification: reads of one monitor are shared in-process
  (single flight, then a cache for `monitor_cache_ttl_s`) and across processes (Redis).
- A storm over more monitors than the read pool serves within a budget must not snowball: a
  read nobody waits for any more is dropped before it starts, and a delivery that could not
  get its read within its budget anyway goes out at once instead of queueing one.
- Datadog's rate limits are obeyed: after a 429, or an answer saying no calls remain, no call
  of that kind is made until the reset; a delivery waits for it only if its budget allows.
- A failing API (5xx, timeout, refused) is asked again at most once per cooldown per kind;
  deliveries arriving meanwhile do not wait for it.
- Bad credentials are not retried per call in a loop, are logged once per cause, and show
  in `health()` for /readyz.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import redis

from router.config import Settings
from router.enrich.api import (
    GET_EVENT,
    GET_MONITOR,
    DatadogApi,
    DatadogApiError,
    DatadogAuthError,
    DatadogNotFound,
    DatadogProtocolError,
    DatadogRateLimited,
    DatadogUnavailable,
)
from router.enrich.book import ApiBook, Gate
from router.enrich.cache import Backlog, ReadPool, SharedMonitorCache, SingleFlight, TtlCache
from router.enrich.snapshot import (
    EventSnapshot,
    MonitorSnapshot,
    event_from_api,
    groups_as_notified,
    is_id,
    monitor_from_api,
)
from router.keys import RouterKeys
from router.metrics import MetricsWriter
from router.model import Enrichment, EnrichmentStatus, Notification

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Datadog evaluates most monitors once a minute and a storm's notifications arrive within
# seconds: a read this young is current for a breaker decision (and the notification's own
# group is corrected from the notification), while a storm costs one read per monitor per 5 s.
MONITOR_CACHE_TTL_S = 5.0
# An indexed event never changes; the deliveries of one notification happen within a minute.
EVENT_CACHE_TTL_S = 60.0
# Waits between GetEvent polls while it answers 404: Datadog makes an event readable 10-20 s
# after the alert (recordings: 11-18 s); capped at 4 s so a readable event is seen soon after.
EVENT_BACKOFF_S: tuple[float, ...] = (1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0)
# One HTTP request: a hung connection frees its thread after this; each delivery stops waiting
# at its own budget earlier, and a late answer still fills the cache for the next ones.
REQUEST_TIMEOUT_S = 10.0
# Datadog reads in flight per process when the caller does not say: each read serves every
# delivery of its monitor, so this covers storms over many monitors while bounding threads and
# sockets. The worker passes its own concurrency: one read per delivery thread never queues.
MAX_CONCURRENT_READS = 16
# How long a process waits for the read another process holds the shared lease for before
# reading Datadog itself: a healthy read lands within ~300 ms, and a leaseholder that died
# must not hold every delivery of its monitor until its lease expires (request timeout + 1 s).
SHARED_WAIT_S = 1.0
# After a 5xx, a timeout or a refused connection, the next call of that kind waits this long:
# a dead API costs one call per second, not one per delivery.
UNAVAILABLE_COOLDOWN_S = 1.0
# After Datadog refuses the keys (401/403), calls of that kind pause this long: keys and
# scopes are fixed by people, not in seconds; once a minute notices the fix without hammering.
AUTH_RETRY_S = 60.0
# Calls of one read within one enrich: the first, one after a rate-limit reset or cooldown,
# one spare; more would only burn the delivery's budget.
MAX_ATTEMPTS = 3
# Entries in the process-local caches: far above the monitors one router serves; a bound
# against an unbounded stream of distinct ids, not a tuning knob.
MAX_CACHE_ENTRIES = 10_000
# After a Redis error the shared cache is skipped this long: Redis trouble outlasts a storm,
# and a client's own connection retries can stall each command for seconds; twice a minute
# notices its return without taxing every read.
SHARED_CACHE_PAUSE_S = 30.0
# Budgets the worker should give `enrich`. Most notifications name their monitor: enrichment
# may delay the breaker by at most 5 s. Without a monitor id only the event can say which
# monitor fired, and it takes Datadog 10-20 s to make it readable.
DEFAULT_BUDGET_S = 5.0
EVENT_WAIT_BUDGET_S = 30.0

KEYS_MISSING = "DD_API_KEY/DD_APP_KEY not set"
_INDEXING = "Datadog makes events readable 10-20 s after an alert"


def recommended_budget(notification: Notification) -> float:
    """The budget to pass to `Enricher.enrich` for this notification."""
    return DEFAULT_BUDGET_S if notification.monitor_id else EVENT_WAIT_BUDGET_S


@dataclass(frozen=True)
class _Failure:
    """Why a read produced nothing; `problem` is the line services and operators see."""

    problem: str
    error: DatadogApiError | None = None


class _Paused(Exception):
    """A read reached the front of the pool while calls of its kind are paused (429, refused
    keys, outage cooldown): it makes no call, and its callers decide as if they had seen the
    pause before queueing it."""

    def __init__(self, gate: Gate) -> None:
        super().__init__(gate.reason)
        self.gate = gate


class Enricher:
    """Reads monitors and events from Datadog for notifications; thread-safe, bounded, shared.

    `coalesce=False` turns off every sharing of reads (single flight and both caches): the
    benchmark's baseline, never what production wants. `max_concurrent_reads`: threads (and
    HTTP connections) reading Datadog; the worker passes its `worker_concurrency`.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        redis_client: redis.Redis | None = None,
        key_prefix: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall_clock: Callable[[], float] = time.time,
        coalesce: bool = True,
        monitor_cache_ttl_s: float = MONITOR_CACHE_TTL_S,
        event_backoff_s: tuple[float, ...] = EVENT_BACKOFF_S,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        max_concurrent_reads: int = MAX_CONCURRENT_READS,
        unavailable_cooldown_s: float = UNAVAILABLE_COOLDOWN_S,
        auth_retry_s: float = AUTH_RETRY_S,
        shared_wait_s: float = SHARED_WAIT_S,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._wall = wall_clock
        self._coalesce = coalesce
        self._monitor_ttl_s = monitor_cache_ttl_s
        self._event_backoff_s = event_backoff_s
        self._cooldown_s = unavailable_cooldown_s
        self._auth_retry_s = auth_retry_s
        self._request_timeout_s = request_timeout_s
        self._shared_wait_s = min(shared_wait_s, request_timeout_s)
        self._book = ApiBook(clock, wall_clock)
        self._api: DatadogApi | None = None
        if settings.dd_api_key and settings.dd_app_key:
            # Raises ConfigError for a malformed DD_SITE/DD_API_HOST: start-up stops, naming it.
            self._api = DatadogApi(
                settings,
                request_timeout_s=request_timeout_s,
                max_connections=max_concurrent_reads,
            )
        else:
            logger.warning(
                "Datadog enrichment disabled: %s; deliveries carry only what notifications hold",
                KEYS_MISSING,
            )
        self._pool = ReadPool(max_concurrent_reads, thread_name_prefix="datadog-read", clock=clock)
        self._flight: SingleFlight[Hashable, Any] = SingleFlight(self._pool)
        # Reads (by key) now waiting for another process's read of the same monitor, and what
        # they wait for: a caller whose budget ends meanwhile says so, not "Datadog is slow".
        self._lease_waits: dict[Hashable, str] = {}
        self._lease_waits_lock = threading.Lock()
        self._monitors: TtlCache[str, MonitorSnapshot] = TtlCache(
            clock, max_entries=MAX_CACHE_ENTRIES
        )
        self._missing_monitors: TtlCache[str, str] = TtlCache(clock, max_entries=MAX_CACHE_ENTRIES)
        self._events: TtlCache[str, EventSnapshot] = TtlCache(clock, max_entries=MAX_CACHE_ENTRIES)
        keys = RouterKeys(key_prefix if key_prefix is not None else settings.key_prefix)
        # Calls, errors and rate-limit waits, counted cluster-wide for /metrics.
        self._metrics = MetricsWriter(redis_client, keys) if redis_client is not None else None
        self._shared: SharedMonitorCache | None = None
        if redis_client is not None and coalesce:
            self._shared = SharedMonitorCache(
                redis_client,
                keys,
                ttl_s=monitor_cache_ttl_s,
                # The leaseholder's read ends within the request timeout; then others read.
                lease_s=request_timeout_s + 1.0,
            )
        self._shared_paused_until = float("-inf")

    # ---- public ----------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self._api is not None

    def enrich(self, notification: Notification, *, budget_s: float) -> Enrichment:
        """What Datadog adds to `notification`, read within `budget_s` seconds; never raises."""
        if notification.carried is not None:
            # The sender already sent the whole monitor (Alertmanager sends every alert of the
            # group), and its ids are not Datadog's: there is nothing to read.
            return notification.carried
        if self._api is None:
            return Enrichment.none(KEYS_MISSING)
        started = self._clock()
        try:
            enrichment = self._enrich(self._api, notification, started + max(0.0, budget_s))
        except Exception:
            # Enrichment is an extra: a bug here must cost the delivery its context, not the
            # delivery itself. Logged with the traceback so it gets fixed.
            logger.exception(
                "enrichment failed unexpectedly for monitor=%s event=%s",
                notification.monitor_id,
                notification.event_id,
            )
            return Enrichment.none("internal error while enriching; see the router's log")
        logger.debug(
            "enrichment %s for monitor=%s event=%s in %.3fs%s",
            enrichment.status,
            enrichment.monitor_id or notification.monitor_id,
            notification.event_id,
            self._clock() - started,
            f": {'; '.join(enrichment.problems)}" if enrichment.problems else "",
        )
        return enrichment

    def read_monitor(self, monitor_id: str, *, budget_s: float) -> MonitorRead:
        """The monitor's current state, shared with the deliveries' reads (cached a few seconds,
        one read per monitor across processes, within Datadog's rate limits); never raises."""
        if self._api is None:
            return MonitorRead(problem=KEYS_MISSING)
        if not is_id(monitor_id):
            return MonitorRead(problem=f"monitor id {monitor_id!r} is not a Datadog monitor id")
        try:
            read = self._monitor(self._api, monitor_id, self._clock() + max(0.0, budget_s))
        except Exception:
            logger.exception("reading monitor=%s failed unexpectedly", monitor_id)
            return MonitorRead(problem="internal error while reading the monitor")
        if isinstance(read, MonitorSnapshot):
            return MonitorRead(snapshot=read)
        return MonitorRead(problem=read.problem, missing=isinstance(read.error, DatadogNotFound))

    def health(self) -> dict[str, Any]:
        """For /readyz detail: `ok` is false while Datadog refuses the keys."""
        book = self._book.snapshot()
        problems = [f"Datadog refused the keys: {f['message']}" for f in book["auth_failures"]]
        problems += [f"Datadog API unavailable: {o['message']}" for o in book["outages"].values()]
        if self._api is None:
            problems.append(f"enrichment disabled: {KEYS_MISSING}")
        return {
            "enabled": self._api is not None,
            "ok": not book["auth_failures"],
            "api_host": self._api.host if self._api else None,
            "problems": problems,
            "cached_monitors": len(self._monitors),
            **book,
        }

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._api is not None:
            self._api.close()

    def __enter__(self) -> Enricher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---- one notification ------------------------------------------------------------------

    def _enrich(self, api: DatadogApi, n: Notification, deadline: float) -> Enrichment:
        problems: list[str] = []
        monitor_id = n.monitor_id
        if monitor_id is not None and not is_id(monitor_id):
            problems.append(f"monitor id {monitor_id!r} is not a Datadog monitor id")
            monitor_id = None
        event_id = n.event_id
        if event_id is not None and not is_id(event_id):
            problems.append(f"event id {event_id!r} is not a numeric v1 event id")
            event_id = None
        # The event is read only for what the notification lacks (default payload, SNS). A
        # reconcile snapshot has no event: the monitor read is the whole of it.
        needs_event = n.source != "reconciler" and (monitor_id is None or not n.tags)
        if monitor_id is None and event_id is None:
            problems.append("the notification names neither a monitor nor an event to read")
            return Enrichment(status="none", problems=tuple(problems))
        if needs_event and event_id is None:
            problems.append("the notification carries no event id: event tags unknown")

        event: EventSnapshot | None = None
        pending_event: Future[Any] | EventSnapshot | _Failure | None = None
        if monitor_id is None and event_id is not None:
            # Only the event can say which monitor fired: wait out its indexing, within budget.
            found = self._event(api, event_id, deadline)
            if isinstance(found, EventSnapshot):
                event, monitor_id = found, found.monitor_id
                if monitor_id is None:
                    problems.append(f"event {event_id} names no monitor")
            else:
                problems.append(found.problem)
        elif needs_event and event_id is not None:
            # The monitor already says what a service needs: one try for the event's tags, in
            # parallel with the monitor read, and no waiting for Datadog to index it.
            pending_event = self._start_event(api, event_id, deadline)

        monitor: MonitorSnapshot | None = None
        if monitor_id is not None:
            read = self._monitor(api, monitor_id, deadline)
            if isinstance(read, MonitorSnapshot):
                monitor = read
            else:
                problems.append(read.problem)

        if pending_event is not None and event_id is not None:
            found = self._finish_event(pending_event, event_id, deadline)
            if isinstance(found, EventSnapshot):
                event = found
            else:
                problems.append(found.problem)

        return _compose(n, monitor, event, needs_event, problems)

    # ---- monitors --------------------------------------------------------------------------

    def _monitor(
        self, api: DatadogApi, monitor_id: str, deadline: float
    ) -> MonitorSnapshot | _Failure:
        if self._coalesce:
            cached = self._monitors.get(monitor_id)
            if cached is not None:
                return cached
            missing = self._missing_monitors.get(monitor_id)
            if missing is not None:
                return _Failure(missing)
        read = self._read(
            GET_MONITOR,
            ("monitor", monitor_id),
            lambda: self._load_monitor(api, monitor_id),
            deadline,
            # A result another caller's read left in the cache meanwhile (after a wait).
            lambda: self._monitors.get(monitor_id) if self._coalesce else None,
        )
        if isinstance(read, _Failure) and isinstance(read.error, DatadogNotFound):
            return _Failure(_not_found(monitor_id), read.error)
        return read

    def _load_monitor(self, api: DatadogApi, monitor_id: str) -> MonitorSnapshot:
        """Runs on the read pool: Redis first, then Datadog (one process at a time)."""
        if self._coalesce:
            # A caller can miss the cache just before a read finishes and leaves the single
            # flight; its read then starts here, after the result was cached.
            cached = self._monitors.get(monitor_id)
            if cached is not None:
                return cached
        token: str | None = None
        shared = self._shared if self._clock() >= self._shared_paused_until else None
        if shared is not None:
            try:
                found = shared.get(monitor_id)
                if found is None:
                    token = shared.lease(monitor_id)
                    # With the lease: the previous holder may have stored its read just now.
                    # Without: wait a little for the holder's read, then read Datadog ourselves
                    # (the holder may have died; its lease outlives it by the request timeout).
                    found = (
                        shared.get(monitor_id)
                        if token is not None
                        else self._wait_for_shared(shared, monitor_id)
                    )
                if found is not None:
                    self._monitors.put(monitor_id, found[0], found[1])
                    return found[0]
            except redis.RedisError as exc:
                self._redis_trouble(exc)
        try:
            fetched_at_ms = int(self._wall() * 1000)
            answer = self._call(GET_MONITOR, lambda: api.get_monitor(monitor_id))
            snapshot = monitor_from_api(
                answer.body, requested_id=monitor_id, fetched_at_ms=fetched_at_ms
            )
            if self._coalesce:
                self._monitors.put(monitor_id, snapshot, self._monitor_ttl_s)
            if shared is not None:
                try:
                    shared.put(snapshot)
                except redis.RedisError as exc:
                    self._redis_trouble(exc)
            return snapshot
        except DatadogNotFound:
            if self._coalesce:
                self._missing_monitors.put(monitor_id, _not_found(monitor_id), self._monitor_ttl_s)
            raise
        finally:
            if shared is not None and token is not None:
                try:
                    shared.release(monitor_id, token)
                except redis.RedisError as exc:
                    self._redis_trouble(exc)

    def _wait_for_shared(
        self, shared: SharedMonitorCache, monitor_id: str
    ) -> tuple[MonitorSnapshot, float] | None:
        key = ("monitor", monitor_id)
        with self._lease_waits_lock:
            self._lease_waits[key] = f"monitor {monitor_id}"
        try:
            return shared.wait_for(monitor_id, self._shared_wait_s)
        finally:
            with self._lease_waits_lock:
                self._lease_waits.pop(key, None)

    # ---- events ----------------------------------------------------------------------------

    def _event(self, api: DatadogApi, event_id: str, deadline: float) -> EventSnapshot | _Failure:
        """Read the event, polling while Datadog has not indexed it, within the deadline."""
        delays = iter(self._event_backoff_s)
        waited = 0.0
        while True:
            found = self._read(
                GET_EVENT,
                ("event", event_id),
                lambda: self._load_event(api, event_id),
                deadline,
                lambda: self._events.get(event_id) if self._coalesce else None,
            )
            if not (isinstance(found, _Failure) and isinstance(found.error, DatadogNotFound)):
                return found
            delay = next(delays, None)
            if delay is None or self._clock() + delay >= deadline:
                return _Failure(
                    f"event {event_id} not readable yet after {waited:.0f}s ({_INDEXING})",
                    found.error,
                )
            self._sleep(delay)
            waited += delay

    def _start_event(
        self, api: DatadogApi, event_id: str, deadline: float
    ) -> Future[Any] | EventSnapshot | _Failure:
        if self._coalesce:
            cached = self._events.get(event_id)
            if cached is not None:
                return cached
        gate = self._book.gate(GET_EVENT)
        if gate is not None:
            return self._event_paused(event_id, gate)
        started = self._submit(
            ("event", event_id), lambda: self._load_event(api, event_id), deadline
        )
        if isinstance(started, Backlog):
            return _Failure(self._backed_up(GET_EVENT, started, deadline))
        return started

    def _event_paused(self, event_id: str, gate: Gate) -> _Failure:
        wait_s = gate.until - self._clock()
        return _Failure(f"event {event_id} not read: {gate.reason} for another {wait_s:.0f}s")

    def _finish_event(
        self, pending: Future[Any] | EventSnapshot | _Failure, event_id: str, deadline: float
    ) -> EventSnapshot | _Failure:
        if not isinstance(pending, Future):
            return pending
        key = ("event", event_id)
        try:
            found = pending.result(timeout=max(0.0, deadline - self._clock()))
        except FutureTimeout:
            problem = self._late(GET_EVENT, key, pending, f" for event {event_id}")
            self._leave(key, pending)
            return _Failure(problem)
        except CancelledError:
            return _Failure(_STOPPING)
        except _Paused as paused:
            return self._event_paused(event_id, paused.gate)
        except DatadogNotFound as exc:
            return _Failure(f"event {event_id} not yet readable ({_INDEXING})", exc)
        except DatadogApiError as exc:
            return _Failure(_problem(exc), exc)
        if not isinstance(found, EventSnapshot):
            raise TypeError(f"event read returned {type(found).__name__}")
        return found

    def _load_event(self, api: DatadogApi, event_id: str) -> EventSnapshot:
        if self._coalesce:
            cached = self._events.get(event_id)  # see _load_monitor
            if cached is not None:
                return cached
        answer = self._call(GET_EVENT, lambda: api.get_event(event_id))
        snapshot = event_from_api(answer.body, requested_id=event_id)
        if self._coalesce:
            self._events.put(event_id, snapshot, EVENT_CACHE_TTL_S)
        return snapshot

    # ---- shared machinery ------------------------------------------------------------------

    def _read(
        self,
        operation: str,
        key: Hashable,
        load: Callable[[], T],
        deadline: float,
        cached: Callable[[], T | None],
    ) -> T | _Failure:
        """One read: wait out gates worth waiting for, share the call, bound every wait."""
        failure = _Failure(f"no time left in the budget for {operation}")
        attempts = waits = 0
        # Our own call just met an outage: one more try after the cooldown, if it fits.
        retry_outage = False
        while attempts < MAX_ATTEMPTS:
            hit = cached()
            if hit is not None:
                return hit
            gate = self._book.gate(operation)
            if gate is not None:
                wait_s = gate.until - self._clock()
                if not (gate.kind == "rate" or (gate.kind == "outage" and retry_outage)):
                    return _Failure(f"{operation} not called: {gate.reason}", failure.error)
                if self._clock() + wait_s >= deadline or waits >= MAX_ATTEMPTS:
                    return _Failure(
                        f"{operation} not called: {gate.reason} for another {wait_s:.0f}s, "
                        "beyond this delivery's budget",
                        failure.error,
                    )
                waits += 1
                if gate.kind == "rate" and self._metrics is not None:
                    self._metrics.datadog_wait(operation, wait_s)
                self._sleep(wait_s)
                continue
            retry_outage = False
            if self._clock() >= deadline:
                return failure
            attempts += 1
            started = self._submit(key, load, deadline)
            if isinstance(started, Backlog):
                return _Failure(self._backed_up(operation, started, deadline), failure.error)
            try:
                result: T = started.result(timeout=max(0.0, deadline - self._clock()))
                return result
            except FutureTimeout:
                problem = self._late(operation, key, started)
                self._leave(key, started)
                return _Failure(problem, failure.error)
            except CancelledError:
                return _Failure(_STOPPING, failure.error)
            except _Paused:
                # Paused while it queued: decided at the top of the loop, as for a new read.
                continue
            except DatadogRateLimited as exc:
                # The book closed the gate; the loop waits for it if the budget allows.
                failure = _Failure(_problem(exc), exc)
            except DatadogUnavailable as exc:
                failure = _Failure(_problem(exc), exc)
                retry_outage = True
            except DatadogApiError as exc:
                return _Failure(_problem(exc), exc)
        return failure

    def _submit(
        self, key: Hashable, load: Callable[[], T], deadline: float
    ) -> Future[Any] | Backlog:
        """Join the read of `key` in flight, or queue a new one unless the pool's backlog
        already outlasts the budget (then the backlog, for the problem line)."""
        refused: list[Backlog] = []

        def admit() -> bool:
            backlog = self._pool.backlog()
            if backlog.queued and backlog.expected_wait_s > deadline - self._clock():
                refused.append(backlog)
                return False
            return True

        if self._coalesce:
            future = self._flight.run(key, load, admit=admit)
        else:
            future = self._pool.submit(load) if admit() else None
        return future if future is not None else refused[0]

    def _leave(self, key: Hashable, future: Future[Any]) -> None:
        """A caller gives up on `future`: a read that nobody waits for and that has not started
        is cancelled, so that abandoned reads do not pile up ahead of wanted ones."""
        if self._coalesce:
            self._flight.leave(key, future)
        else:
            future.cancel()

    def _backed_up(self, operation: str, backlog: Backlog, deadline: float) -> str:
        left_s = max(0.0, deadline - self._clock())
        return (
            f"Datadog reads are backed up; sent without waiting ({operation}: "
            f"{backlog.queued} reads queued, about {backlog.expected_wait_s:.1f}s to wait, "
            f"{left_s:.1f}s left in the budget)"
        )

    def _late(self, operation: str, key: Hashable, future: Future[Any], what: str = "") -> str:
        """What the read was doing when a caller's budget ended: the line says what happened."""
        if not future.running() and not future.done():
            return (
                f"Datadog reads are backed up: {operation}{what} was still queued behind "
                "other reads when the budget ended"
            )
        with self._lease_waits_lock:
            awaited = self._lease_waits.get(key)
        if awaited is not None:
            return (
                f"another router process was reading {awaited} and its result did not arrive "
                "within the budget"
            )
        return f"Datadog did not answer {operation}{what} within the budget"

    def _call(self, operation: str, call: Callable[[], Any]) -> Any:
        # Checked here, on the read pool right before the request: reads queued before a 429
        # or refused keys must not make the calls the pause exists to prevent.
        gate = self._book.gate(operation)
        if gate is not None:
            raise _Paused(gate)
        self._book.count(operation)
        try:
            answer = call()
        except DatadogApiError as exc:
            self._book.failed(
                operation, exc, cooldown_s=self._cooldown_s, auth_retry_s=self._auth_retry_s
            )
            if self._metrics is not None:
                self._metrics.datadog_call(operation, error_kind(exc))
            raise
        self._book.succeeded(operation, answer.rate_limit)
        if self._metrics is not None:
            self._metrics.datadog_call(operation)
        return answer

    def _redis_trouble(self, exc: redis.RedisError) -> None:
        # One line per pause: Redis trouble shows loudly elsewhere too (the queue needs it).
        now = self._clock()
        if now >= self._shared_paused_until:
            self._shared_paused_until = now + SHARED_CACHE_PAUSE_S
            logger.warning(
                "shared monitor cache unavailable, reading Datadog directly for %.0fs: %s",
                SHARED_CACHE_PAUSE_S,
                exc,
            )


_STOPPING = "the Datadog read was cancelled: the router is stopping"


@dataclass(frozen=True)
class MonitorRead:
    """What `Enricher.read_monitor` found: a snapshot, or why not (`missing`: Datadog has no
    such monitor, e.g. it was deleted)."""

    snapshot: MonitorSnapshot | None = None
    problem: str | None = None
    missing: bool = False


def error_kind(exc: DatadogApiError) -> str:
    """The `kind` label of a failed Datadog call in /metrics."""
    for kind, cls in (
        ("rate_limited", DatadogRateLimited),
        ("auth", DatadogAuthError),
        ("not_found", DatadogNotFound),
        ("unavailable", DatadogUnavailable),
        ("unreadable", DatadogProtocolError),
    ):
        if isinstance(exc, cls):
            return kind
    return "error"


def _not_found(monitor_id: str) -> str:
    return f"monitor {monitor_id} not found in Datadog"


def _problem(exc: DatadogApiError) -> str:
    if isinstance(exc, DatadogAuthError):
        return f"Datadog refused the router's keys: {exc}"
    if isinstance(exc, DatadogRateLimited):
        return f"Datadog rate limit: {exc}"
    if isinstance(exc, DatadogUnavailable):
        return f"Datadog API unavailable: {exc}"
    if isinstance(exc, DatadogProtocolError):
        return f"Datadog's answer could not be read: {exc}"
    return str(exc)


def _compose(
    n: Notification,
    monitor: MonitorSnapshot | None,
    event: EventSnapshot | None,
    needs_event: bool,
    problems: list[str],
) -> Enrichment:
    """Complete: the monitor and (when needed) the event were read; partial: some; none: nothing."""
    status: EnrichmentStatus
    if monitor is not None and (event is not None or not needs_event):
        status = "complete"
    elif monitor is not None or event is not None:
        status = "partial"
    else:
        status = "none"
    return Enrichment(
        status=status,
        monitor_id=monitor.monitor_id if monitor else (event.monitor_id if event else None),
        monitor_name=monitor.name if monitor else None,
        overall_state=monitor.overall_state if monitor else None,
        monitor_tags=monitor.tags if monitor else (),
        groups=groups_as_notified(monitor, n) if monitor else None,
        event_tags=event.tags if event else None,
        event_title=event.title if event else None,
        event_time_ms=event.time_ms if event else None,
        problems=tuple(problems),
    )
