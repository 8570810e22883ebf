"""Group commit for the web: concurrent requests of one process share one Redis round trip.

Each request thread hands its notification to `EnqueueBatcher.enqueue` and waits for its own
result. One of the waiting threads at a time (the leader) stores everything waiting in one
call (`DeliveryQueue.enqueue_many`); requests that arrive meanwhile wait for the next call,
which the first of them leads. Nothing waits for a batch to fill: alone, a request is stored at
once, in a batch of one. Every request still answers only after Redis acknowledged the call
that stored it, and a failed call fails every request in it (each answers 503, none is told its
work is stored).

On a small machine a round trip to Redis costs the web more CPU (system calls, waking Redis)
than parsing the notification; see `bench/ingest_load.py` and docs/benchmarks.md.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

# More than a web process has threads: a batch is bounded by how many requests wait at once.
MAX_BATCH = 100
# Under concurrent load (the last call stored more than one), a leader waits this long at most
# for as many requests as the last call had: those being parsed then join it instead of
# making a call of their own. Alone, a request never waits.
LINGER_S = 0.001


class BatchWaitTimeout(Exception):
    """The batch holding a request did not finish in time (its leader is stuck)."""


@dataclass(eq=False)  # found in the waiting list by identity
class _Waiting(Generic[Item, Result]):
    item: Item
    # Set when the result (or error) is there, or when this thread is asked to lead.
    woken: threading.Event = field(default_factory=threading.Event)
    leads: bool = False
    done: bool = False
    result: Result | None = None
    error: BaseException | None = None


class Batcher(Generic[Item, Result]):
    """Runs `store(items) -> results` (one result per item, in order) for whoever is waiting."""

    def __init__(
        self,
        store: Callable[[Sequence[Item]], Sequence[Result]],
        *,
        wait_s: float,
        max_batch: int = MAX_BATCH,
        linger_s: float = LINGER_S,
    ) -> None:
        self._store = store
        self._wait_s = wait_s
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._waiting: list[_Waiting[Item, Result]] = []
        self._leading = False
        self._last_batch = 1
        # How many waiting requests a lingering leader waits for (0: none lingers). Only the
        # request that completes the batch wakes it: waking it for each would cost a thread
        # switch per request.
        self._lingering_for = 0

    def submit(self, item: Item) -> Result:
        """`item`'s result once its batch is stored; the batch's exception if that failed."""
        me: _Waiting[Item, Result] = _Waiting(item)
        with self._lock:
            self._waiting.append(me)
            if not self._leading:
                self._leading = me.leads = True
            elif self._lingering_for and len(self._waiting) >= self._lingering_for:
                self._arrived.notify()
        while not me.done:
            if me.leads:
                self._lead()
            elif me.woken.wait(self._wait_s):
                me.woken.clear()
            else:
                self._give_up(me)
        if me.error is not None:
            raise me.error
        return me.result  # type: ignore[return-value]

    def _linger(self) -> None:
        """Under load, wait (bounded) for as many requests as the last call held; lock held."""
        if self._last_batch <= 1 or self._linger_s <= 0:
            return
        deadline = time.monotonic() + self._linger_s
        self._lingering_for = min(self._last_batch, self._max_batch)
        try:
            while len(self._waiting) < self._lingering_for:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._arrived.wait(left)
        finally:
            self._lingering_for = 0

    def _give_up(self, me: _Waiting[Item, Result]) -> None:
        """Stop waiting for a batch that takes too long (its leader is stuck on Redis)."""
        with self._lock:
            if me.leads or me.done:
                return  # asked to lead, or finished, just now: carry on
            if any(waiting is me for waiting in self._waiting):
                # Not taken into a batch yet: withdrawn, so it is never stored unanswered.
                self._waiting = [waiting for waiting in self._waiting if waiting is not me]
        # Else it is in the batch being stored: it may still be, and the sender's retry is
        # then a duplicate, never a loss.
        raise BatchWaitTimeout(f"the batch was not stored within {self._wait_s:.0f}s")

    def _lead(self) -> None:
        with self._lock:
            self._linger()
            batch = self._waiting[: self._max_batch]
            del self._waiting[: self._max_batch]
            self._last_batch = len(batch)
        try:
            results = self._store([waiting.item for waiting in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for a batch of {len(batch)}")
            for waiting, result in zip(batch, results, strict=True):
                waiting.result = result
        except BaseException as exc:  # every waiter must hear of it, whatever it is
            for waiting in batch:
                waiting.error = exc
        finally:
            with self._lock:
                successor = self._waiting[0] if self._waiting else None
                if successor is None:
                    self._leading = False
                else:
                    successor.leads = True
            for waiting in batch:
                waiting.leads = False
                waiting.done = True
                waiting.woken.set()
            if successor is not None:
                successor.woken.set()
