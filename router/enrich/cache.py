"""Sharing reads: single flight per key, a short in-process cache, a Redis cache across processes.

In a storm, every delivery of a monitor needs the same read. Within a process, concurrent
callers share one in-flight read (`SingleFlight`) and later ones the cached result
(`TtlCache`). Across worker processes, `SharedMonitorCache` keeps the snapshot in Redis for
the same few seconds and lets one process read Datadog while the others wait for its result.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Hashable
from concurrent.futures import Executor, Future
from typing import Generic, TypeVar

import redis

from router.enrich.snapshot import MonitorSnapshot
from router.keys import RouterKeys

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# While another process reads a monitor, look for its result this often: a Datadog read takes
# ~50-300 ms, so a waiter learns of it within a fraction of that.
SHARED_POLL_S = 0.05


class SingleFlight(Generic[K, V]):
    """At most one call per key in flight; callers arriving meanwhile share its future."""

    def __init__(self, executor: Executor) -> None:
        self._executor = executor
        self._lock = threading.Lock()
        self._inflight: dict[K, Future[V]] = {}

    def run(self, key: K, fn: Callable[[], V]) -> Future[V]:
        with self._lock:
            future = self._inflight.get(key)
            if future is not None:
                return future
            future = self._executor.submit(fn)
            self._inflight[key] = future
        future.add_done_callback(lambda done: self._forget(key, done))
        return future

    def _forget(self, key: K, done: Future[V]) -> None:
        with self._lock:
            if self._inflight.get(key) is done:
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
