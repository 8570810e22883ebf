"""Shadow mode: the calls a shadowed breaker would have refused, counted and flushed to Redis.

`Breakers.is_open` lets such a call through and calls `ShadowTally.add`, which only bumps a
counter in memory (by breaker, key and minute). A daemon thread, started on the first count
in a process (so a process with no shadowed breaker has none), adds the counts to the
breaker's `<prefix>:shadow:<member>` hash every `interval` seconds (see `Store.add_shadow`).
A failed flush keeps the counts for the next one; `flush()` and `stop()` write what is left.
"""

from __future__ import annotations

import logging
import os
import threading

from breaker_client.errors import BreakerStoreUnavailable
from breaker_client.keys import BreakerKeys
from breaker_client.store import Store

log = logging.getLogger(__name__)

# Counts are kept per minute: fine enough for a report to say when calls would have been
# refused, coarse enough that a week open is 10,080 fields per breaker at most.
BUCKET_MS = 60_000
# How often a process writes its counts: `router breakers list` lags by at most this.
DEFAULT_SHADOW_FLUSH_S = 10.0

# (breaker name, key, minute's start in Unix ms) -> calls let through that it would refuse.
Counts = dict[tuple[str, str | None, int], int]


class ShadowTally:
    """Would-be refusals of this process, not yet written to Redis, and the thread writing them."""

    def __init__(self, store: Store, *, interval: float) -> None:
        if interval <= 0:
            raise ValueError(f"shadow_flush_interval must be positive seconds, got {interval}")
        self._store = store
        self.interval = interval
        self._lock = threading.Lock()
        self._counts: Counts = {}
        # Since this process started (or forked): what `Breakers.stats()` reports.
        self.counted = 0
        self.flush_errors = 0
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self._stop = threading.Event()

    def add(self, name: str, key: str | None, now_ms: int) -> None:
        """Count one call let through that breaker `name`/`key` would have refused."""
        at = (name, key, now_ms - now_ms % BUCKET_MS)
        with self._lock:
            self._counts[at] = self._counts.get(at, 0) + 1
            self.counted += 1
        if self._thread is None:  # the first count in this process (a fork resets it)
            self._start()

    def pending(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def flush(self) -> int:
        """Add the counts to Redis now; returns how many calls were written. On failure the
        counts stay for the next flush and `BreakerStoreUnavailable` is raised."""
        with self._lock:
            counts, self._counts = self._counts, {}
        if not counts:
            return 0
        items = [
            (BreakerKeys.member(name, key), bucket, n) for (name, key, bucket), n in counts.items()
        ]
        try:
            self._store.add_shadow(items)
        except BreakerStoreUnavailable:
            with self._lock:
                for at, n in counts.items():
                    self._counts[at] = self._counts.get(at, 0) + n
            raise
        return sum(counts.values())

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._pid = os.getpid()
            thread = threading.Thread(target=self._run, name="breakers-shadow", daemon=True)
            self._thread = thread
        thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except BreakerStoreUnavailable as exc:
                self.flush_errors += 1
                if self.flush_errors == 1 or self.flush_errors % 100 == 0:
                    log.warning("breakers: shadow counts kept for the next flush: %s", exc)
            except Exception:  # the counts stay; say what went wrong, keep flushing
                log.exception("breakers: shadow flush failed")

    def stop(self, timeout: float) -> None:
        """Stop the thread and write what is left (once, best effort: Redis may be gone)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and self._pid == os.getpid() and thread.is_alive():
            thread.join(timeout)
        try:
            self.flush()
        except BreakerStoreUnavailable as exc:
            log.warning("breakers: %d shadow counts not written at stop: %s", self.pending(), exc)

    def after_fork(self) -> None:
        """In a forked child: the parent writes the counts it holds; the child starts afresh."""
        self._lock = threading.Lock()
        self._counts = {}
        self.counted = 0
        self._thread = None
        self._pid = None
