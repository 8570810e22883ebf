"""Per-endpoint fairness inside one worker: a concurrency cap, and a short in-process wait line.

A storm of deliveries to one service must neither hold up every other endpoint nor be
bounced through Redis over and over. So, per endpoint (scheme, host and port):
- at most `limit` attempts run at once;
- beyond that, a delivery waits in this process only while the endpoint's recent pace says
  it will start within `max_wait_s` (a fast endpoint drains a long line quickly, a dead one
  gets none), and only while the whole process holds fewer than `max_parked`;
- otherwise it goes back to Redis until its turn: the line in process and the deliveries
  deferred before it, at the endpoint's pace, so a burst comes back one slot's worth at a
  time instead of all at once (to be deferred again, wave after wave).

Pure bookkeeping behind one lock; the worker does the I/O.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

# Assumed duration of an attempt at an endpoint not called yet by this process.
UNKNOWN_PACE_S = 1.0
# Weight of the newest attempt in an endpoint's running average duration.
PACE_WEIGHT = 0.2
# Bounds of a deferral to Redis: a fast endpoint's burst comes back quickly, a dead endpoint's
# deliveries are not polled.
MIN_DEFER_S = 0.05
MAX_DEFER_S = 30.0


@dataclass
class _Endpoint(Generic[T]):
    running: int = 0
    pace_s: float | None = None
    parked: deque[tuple[float, T]] = field(default_factory=deque)
    # When the last delivery deferred to Redis is due to start (clock time): the next
    # deferral starts one slot after it.
    deferred_until: float = float("-inf")


class EndpointGate(Generic[T]):
    def __init__(
        self,
        limit: int,
        *,
        max_parked: int,
        max_wait_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.max_parked = max_parked
        self.max_wait_s = max_wait_s
        self._clock = clock
        self._lock = threading.Lock()
        self._endpoints: dict[str, _Endpoint[T]] = {}
        self._parked_total = 0

    @property
    def parked_total(self) -> int:
        with self._lock:
            return self._parked_total

    def _slot_s(self, endpoint: _Endpoint[T]) -> float:
        """How often one of the endpoint's slots frees up, at its pace."""
        pace = endpoint.pace_s if endpoint.pace_s is not None else UNKNOWN_PACE_S
        return pace / self.limit

    def _expected_wait_s(self, endpoint: _Endpoint[T]) -> float:
        """When a new arrival would start: the line ahead of it, at the endpoint's pace."""
        return self._slot_s(endpoint) * (endpoint.running + len(endpoint.parked) + 1)

    def _defer(self, endpoint: _Endpoint[T], wait_s: float) -> float:
        """Seconds until a deferred arrival's turn: after the line in process and after every
        deferral before it (one slot apart), never further off than MAX_DEFER_S."""
        now = self._clock()
        latest = now + MAX_DEFER_S
        start = min(max(now + wait_s, endpoint.deferred_until), latest)
        endpoint.deferred_until = min(start + self._slot_s(endpoint), latest)
        return max(start - now, MIN_DEFER_S)

    def admit(self, origin: str, item: T) -> str | float:
        """`"run"` (a slot is taken), `"parked"` (it waits here), or seconds to defer it."""
        with self._lock:
            endpoint = self._endpoints.setdefault(origin, _Endpoint())
            if endpoint.running < self.limit:
                endpoint.running += 1
                return "run"
            wait = self._expected_wait_s(endpoint)
            if wait <= self.max_wait_s and self._parked_total < self.max_parked:
                endpoint.parked.append((self._clock(), item))
                self._parked_total += 1
                return "parked"
            return self._defer(endpoint, wait)

    def finished(self, origin: str, duration_s: float | None) -> T | None:
        """An attempt ended: the next parked item to run in its place, or None (slot freed)."""
        with self._lock:
            endpoint = self._endpoints[origin]
            if duration_s is not None:
                previous = endpoint.pace_s if endpoint.pace_s is not None else duration_s
                endpoint.pace_s = previous + PACE_WEIGHT * (duration_s - previous)
            if endpoint.parked:
                self._parked_total -= 1
                return endpoint.parked.popleft()[1]
            endpoint.running -= 1
            return None

    def shed(self, older_than_s: float) -> list[T]:
        """Take back items parked longer than `older_than_s` (the endpoint slowed down)."""
        cutoff = self._clock() - older_than_s
        shed: list[T] = []
        with self._lock:
            for endpoint in self._endpoints.values():
                while endpoint.parked and endpoint.parked[0][0] < cutoff:
                    shed.append(endpoint.parked.popleft()[1])
            self._parked_total -= len(shed)
        return shed

    def drain(self) -> list[T]:
        """Take back every parked item (the worker is stopping)."""
        with self._lock:
            items = [item for e in self._endpoints.values() for _, item in e.parked]
            for endpoint in self._endpoints.values():
                endpoint.parked.clear()
            self._parked_total = 0
        return items
