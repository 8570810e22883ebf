"""Sharing reads: single flight per key, a short in-process cache, a Redis cache across processes.

In a storm, every delivery of a monitor needs the same read. Within a process, concurrent
callers share one in-flight read (`SingleFlight`) and later ones the cached result
(`TtlCache`). Across worker processes, `SharedMonitorCache` keeps the snapshot in Redis for
the same few seconds and lets one process read Datadog while the others wait for its result.
Reads run on a `ReadPool`, which knows how many are queued and how long one takes, so that a
caller can tell a backlog it cannot wait out from one it can.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Hashable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, ParamSpec, TypeVar

import redis

from router.enrich.snapshot import MonitorSnapshot
from router.keys import RouterKeys

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
T = TypeVar("T")
P = ParamSpec("P")

# While another process reads a monitor, look for its result this often: a Datadog read takes
# ~50-300 ms, so a waiter learns of it within a fraction of that.
SHARED_POLL_S = 0.05
# Weight of the newest read in the pool's running average of read durations: recent enough to
# notice within a few reads that Datadog slowed down, smooth enough to ignore one odd read.
READ_LATENCY_WEIGHT = 0.2


@dataclass(frozen=True)
class Backlog:
    """Reads waiting for a pool thread, and how long a new one would wait behind them."""

    queued: int
    expected_wait_s: float


class ReadPool(Executor):
    """A thread pool that counts its queued tasks and averages how long a task runs.

    A cancelled task (one that never started) leaves the queue count at once; `backlog()` is
    queued tasks / threads x the recent task duration: the wait a new task should expect.
    """

    def __init__(
        self, max_workers: int, *, thread_name_prefix: str, clock: Callable[[], float]
    ) -> None:
        self.size = max_workers
        self._executor = ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix=thread_name_prefix
        )
        self._clock = clock
        self._lock = threading.Lock()
        self._queued = 0
        self._latency_s: float | None = None

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        def task() -> T:
            started = self._clock()
            with self._lock:
                self._queued -= 1
            try:
                return fn(*args, **kwargs)
            finally:
                self._note_duration(self._clock() - started)

        with self._lock:
            self._queued += 1
        try:
            future = self._executor.submit(task)
        except BaseException:
            with self._lock:
                self._queued -= 1
            raise
        future.add_done_callback(self._dequeue_if_cancelled)
        return future

    def _dequeue_if_cancelled(self, future: Future[T]) -> None:
        # A cancelled task never ran, so it never left the queue count itself.
        if future.cancelled():
            with self._lock:
                self._queued -= 1

    def _note_duration(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        with self._lock:
            if self._latency_s is None:
                self._latency_s = seconds
            else:
                self._latency_s += READ_LATENCY_WEIGHT * (seconds - self._latency_s)

    def backlog(self) -> Backlog:
        with self._lock:
            queued, latency_s = self._queued, self._latency_s
        return Backlog(max(0, queued), max(0, queued) / self.size * (latency_s or 0.0))

    @property
    def latency_s(self) -> float | None:
        """The recent duration of one task (a running average), or None before any finished."""
        with self._lock:
            return self._latency_s

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._executor.shutdown(wait=wait, cancel_futures=cancel_futures)


@dataclass
class _Flight(Generic[V]):
    future: Future[V]
    waiters: int


class SingleFlight(Generic[K, V]):
    """At most one call per key in flight; callers arriving meanwhile share its future.

    Each caller counts as a waiter until the call ends or it `leave`s; when the last waiter of
    a call that has not started yet leaves, the call is cancelled: nobody wants its result, and
    it would only hold up the calls queued behind it. A started call runs on (its result still
    serves later callers through the caches).
    """

    def __init__(self, executor: Executor) -> None:
        self._executor = executor
        # Reentrant: cancelling a future runs its done callbacks (`_forget`) in this thread.
        self._lock = threading.RLock()
        self._inflight: dict[K, _Flight[V]] = {}

    def run(
        self, key: K, fn: Callable[[], V], *, admit: Callable[[], bool] | None = None
    ) -> Future[V] | None:
        """Join the call in flight for `key`, or start `fn` if `admit()` (when given) allows.

        None when a new call was needed and `admit` refused it. Joining is always allowed: it
        adds no work.
        """
        with self._lock:
            flight = self._inflight.get(key)
            if flight is not None:
                flight.waiters += 1
                return flight.future
            if admit is not None and not admit():
                return None
            future = self._executor.submit(fn)
            self._inflight[key] = _Flight(future, 1)
        future.add_done_callback(lambda done: self._forget(key, done))
        return future

    def leave(self, key: K, future: Future[V]) -> bool:
        """A caller of `run` stops waiting for `future`; True if that cancelled the call."""
        with self._lock:
            flight = self._inflight.get(key)
            if flight is None or flight.future is not future:
                return False  # ended (or replaced) already
            flight.waiters -= 1
            if flight.waiters > 0 or not future.cancel():
                return False
            # `cancel` ran `_forget` already; this is for an executor that runs no callbacks.
            if self._inflight.get(key) is flight:
                del self._inflight[key]
            return True

    def waiters(self, key: K) -> int:
        with self._lock:
            flight = self._inflight.get(key)
            return flight.waiters if flight is not None else 0

    def _forget(self, key: K, done: Future[V]) -> None:
        with self._lock:
            flight = self._inflight.get(key)
            if flight is not None and flight.future is done:
                del self._inflight[key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._inflight)


class TtlCache(Generic[K, V]):
    """A small thread-safe map whose entries expire (on the injected clock)."""

    def __init__(self, clock: Callable[[], float], *, max_entries: int) -> None:
        self._clock = clock
        self._max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= self._clock():
                del self._entries[key]
                return None
            return entry[1]

    def put(self, key: K, value: V, ttl_s: float) -> None:
        if ttl_s <= 0:
            return
        with self._lock:
            now = self._clock()
            if len(self._entries) >= self._max_entries:
                self._entries = {k: e for k, e in self._entries.items() if e[0] > now}
                if len(self._entries) >= self._max_entries:
                    # Still full of live entries: drop the oldest inserted rather than grow.
                    del self._entries[next(iter(self._entries))]
            self._entries[key] = (now + ttl_s, value)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


# Release the lease only if it is still ours (it may have expired and been taken over).
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class SharedMonitorCache:
    """Monitor snapshots in Redis for a few seconds, and a lease so one process reads at a time.

    Raises `redis.RedisError` as it comes: the caller falls back to reading Datadog itself, as
    enrichment must not depend on the cache being up.
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: RouterKeys,
        *,
        ttl_s: float,
        lease_s: float,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._keys = keys
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._lease_ms = max(1, int(lease_s * 1000))
        self._sleep = sleep
        self._clock = clock

    def get(self, monitor_id: str) -> tuple[MonitorSnapshot, float] | None:
        """The cached snapshot and the seconds it stays valid, or None."""
        pipe = self._client.pipeline(transaction=False)
        pipe.get(self._keys.dd_monitor(monitor_id))
        pipe.pttl(self._keys.dd_monitor(monitor_id))
        raw, pttl = pipe.execute()
        if raw is None or not isinstance(pttl, int) or pttl <= 0:
            return None
        try:
            return MonitorSnapshot.from_json(raw), pttl / 1000
        except ValueError:
            return None  # written by another version; this read will overwrite it

    def put(self, snapshot: MonitorSnapshot) -> None:
        self._client.set(
            self._keys.dd_monitor(snapshot.monitor_id), snapshot.to_json(), px=self._ttl_ms
        )

    def lease(self, monitor_id: str) -> str | None:
        """Become the process that reads this monitor; a token to release, or None if taken."""
        token = uuid.uuid4().hex
        taken = self._client.set(
            self._keys.dd_monitor_read(monitor_id), token, nx=True, px=self._lease_ms
        )
        return token if taken else None

    def release(self, monitor_id: str, token: str) -> None:
        self._client.eval(_RELEASE, 1, self._keys.dd_monitor_read(monitor_id), token)

    def wait_for(self, monitor_id: str, timeout_s: float) -> tuple[MonitorSnapshot, float] | None:
        """Wait for the leaseholder's snapshot; None if the lease ends or times out without one."""
        deadline = self._clock() + timeout_s
        lease_key = self._keys.dd_monitor_read(monitor_id)
        while True:
            found = self.get(monitor_id)
            if found is not None:
                return found
            if self._clock() >= deadline or not self._client.exists(lease_key):
                return self.get(monitor_id)
            self._sleep(SHARED_POLL_S)
