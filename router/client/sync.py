"""The process-local snapshot that `is_open` reads, and the thread that keeps it fresh.

One daemon thread per `Breakers` subscribes to the change channel and reloads each breaker
named there; a full resync on every (re)connect and every `resync_interval` bounds how stale
the snapshot can be if a message is lost. When Redis goes away the snapshot stays as it was
and the thread reconnects with capped, jittered backoff. After a fork the child drops the
parent's thread and sockets and starts its own on first use.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable

import redis

from router.client.errors import BreakerStoreUnavailable
from router.client.model import Record
from router.client.states import Entry, compile_entry
from router.client.store import Store

log = logging.getLogger(__name__)

# Messages are waited for in slices this long so `stop()` returns promptly.
POLL_S = 0.2
# Reconnect quickly after a blip, but a fleet must not hammer a Redis that is restarting.
RECONNECT_FIRST_S = 0.1
RECONNECT_MAX_S = 2.0
# How long to wait for Redis to confirm the subscription before reading the full state.
SUBSCRIBE_CONFIRM_S = 2.0

HotMap = dict[str, dict[str | None, Entry]]


class Snapshot:
    """Every breaker this process knows, plus the compiled `hot` map that `is_open` reads.

    `hot` holds only breakers that can refuse a call: a name with nothing open is absent, so
    the common answer is one failed dict lookup. Its inner dicts are never mutated once
    published (copy on write) and a resync swaps the outer dict whole, so a reader without a
    lock sees each breaker either before or after an update, never half of one. Writers (the
    sync thread and threads that just wrote) serialise on `lock`.
    """

    def __init__(self, now_ms: Callable[[], int]) -> None:
        self._now_ms = now_ms
        self.hot: HotMap = {}
        # name -> key -> (record, local sequence number of the update that stored it)
        self.records: dict[str, dict[str | None, tuple[Record, int]]] = {}
        self.loaded = False
        self.loaded_at: float | None = None
        self.lock = threading.Lock()
        self._seq = 0

    def sequence(self) -> int:
        with self.lock:
            return self._seq

    def apply(self, record: Record) -> None:
        """Store `record` unless this process already holds a newer revision of it."""
        with self.lock:
            by_key = self.records.setdefault(record.name, {})
            held = by_key.get(record.key)
            if held is not None and held[0].rev > record.rev:
                return
            self._seq += 1
            by_key[record.key] = (record, self._seq)
            self._publish(record.name)

    def remove(self, name: str, key: str | None) -> None:
        with self.lock:
            if self.records.get(name, {}).pop(key, None) is not None:
                self._publish(name)

    def replace_all(self, records: Iterable[Record], started_seq: int) -> None:
        """Make Redis's full state the truth, keeping only updates applied since the read began."""
        fresh: dict[str, dict[str | None, tuple[Record, int]]] = {}
        with self.lock:
            for record in records:
                fresh.setdefault(record.name, {})[record.key] = (record, self._seq)
            for name, by_key in self.records.items():
                for key, (record, seq) in by_key.items():
                    newer = fresh.get(name, {}).get(key)
                    if seq > started_seq and (newer is None or record.rev > newer[0].rev):
                        fresh.setdefault(name, {})[key] = (record, seq)
            self.records = fresh
            now_ms = self._now_ms()
            hot: HotMap = {}
            for name, by_key in fresh.items():
                compiled = _compile(by_key, now_ms)
                if compiled:
                    hot[name] = compiled
            self.hot = hot
            self.loaded = True
            self.loaded_at = time.monotonic()

    def record(self, name: str, key: str | None) -> Record | None:
        held = self.records.get(name, {}).get(key)
        return held[0] if held is not None else None

    def all_records(self) -> list[Record]:
        with self.lock:
            return [record for by_key in self.records.values() for record, _ in by_key.values()]

    def after_fork(self) -> None:
        # The parent's writer may have held the lock at fork time; the data is consistent
        # (updates are single reference swaps), only the lock must be new.
        self.lock = threading.Lock()

    def _publish(self, name: str) -> None:
        compiled = _compile(self.records.get(name, {}), self._now_ms())
        if compiled:
            self.hot[name] = compiled
        else:
            self.hot.pop(name, None)


def _compile(by_key: dict[str | None, tuple[Record, int]], now_ms: int) -> dict[str | None, Entry]:
    compiled: dict[str | None, Entry] = {}
    for key, (record, _) in by_key.items():
        entry = compile_entry(record, now_ms)
        if entry is not None:
            compiled[key] = entry
    return compiled


class Syncer:
    """Runs the subscriber thread for one `Breakers`; all Redis reads for the snapshot go here."""

    def __init__(self, store: Store, snapshot: Snapshot, *, resync_interval: float) -> None:
        if resync_interval <= 0:
            raise ValueError(f"resync_interval must be positive seconds, got {resync_interval}")
        self._store = store
        self._snapshot = snapshot
        self.resync_interval = resync_interval
        self._start_lock = threading.Lock()
        self._reset_runtime()
        self.resyncs = 0
        self.resync_errors = 0
        self.messages = 0
        self.reconnects = 0

    def _reset_runtime(self) -> None:
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self._stop = threading.Event()
        # Set once the first connection attempt has succeeded or failed (startup waits on it).
        self.first_attempt = threading.Event()
        self._pubsub: redis.client.PubSub | None = None
        self.connected = False
        self._session_connected = False
        self._down_since: float | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._pid == os.getpid() and self._thread.is_alive()

    def start(self) -> None:
        with self._start_lock:
            if self.running or self._stop.is_set():
                return
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="breakers-sync", daemon=True)
            self._thread.start()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and self._pid == os.getpid() and thread.is_alive():
            thread.join(timeout)

    def after_fork(self) -> None:
        """In a forked child: forget the parent's thread and subscription without closing them."""
        stopped = self._stop.is_set()
        self._start_lock = threading.Lock()
        self._reset_runtime()
        if stopped:
            self._stop.set()

    def resync(self) -> int:
        """Reload every breaker from Redis; returns how many there are."""
        started = self._snapshot.sequence()
        try:
            records = self._store.read_all()
        except BreakerStoreUnavailable:
            self.resync_errors += 1
            raise
        self._snapshot.replace_all(records, started)
        self.resyncs += 1
        return len(records)

    def reload(self, member: str) -> None:
        name, key = self._store.keys.split_member(member)
        record = self._store.read(name, key)
        if record is None:
            self._snapshot.remove(name, key)
        else:
            self._snapshot.apply(record)

    def _run(self) -> None:
        backoff = RECONNECT_FIRST_S
        while not self._stop.is_set():
            try:
                self._session()
                backoff = RECONNECT_FIRST_S
            except (redis.RedisError, OSError, BreakerStoreUnavailable) as exc:
                if not self._stop.is_set():
                    self._lost(exc)
            except Exception:  # keep the snapshot fed whatever went wrong; say what it was
                log.exception("breakers: sync thread error; reconnecting")
                self._lost(None)
            finally:
                self.first_attempt.set()
                self._close_pubsub()
            if self._session_connected:
                # The session worked for a while: start the next reconnect from scratch.
                backoff, self._session_connected = RECONNECT_FIRST_S, False
            if self._stop.wait(backoff * random.uniform(0.5, 1.0)):
                break
            backoff = min(backoff * 2, RECONNECT_MAX_S)

    def _session(self) -> None:
        """One connection's life: subscribe, resync, then follow the channel until it fails."""
        pubsub = self._store.client.pubsub()  # type: ignore[no-untyped-call]  # redis-py lacks the hint
        self._pubsub = pubsub
        pubsub.subscribe(self._store.keys.channel)
        # Only after Redis confirms the subscription is a full read safe: a change made
        # from then on is in the channel, and anything before it is in the read.
        deadline = time.monotonic() + SUBSCRIBE_CONFIRM_S
        while True:
            message = pubsub.get_message(timeout=POLL_S)
            if message is not None and message.get("type") == "subscribe":
                break
            if time.monotonic() > deadline:
                raise redis.TimeoutError("Redis did not confirm the breaker channel subscription")
        count = self.resync()
        self._connected(count)
        next_resync = time.monotonic() + self.resync_interval
        while not self._stop.is_set():
            wait = min(POLL_S, max(0.0, next_resync - time.monotonic()))
            message = pubsub.get_message(timeout=wait)
            kind = message.get("type") if message is not None else None
            if kind == "message":
                assert message is not None
                self.messages += 1
                self.reload(str(message["data"]))
            elif kind == "subscribe":
                # redis-py reconnected and resubscribed by itself (a client with retries):
                # changes published during the gap were missed, so read everything again.
                self.reconnects += 1
                self.resync()
            if time.monotonic() >= next_resync:
                self.resync()
                next_resync = time.monotonic() + self.resync_interval

    def _connected(self, count: int) -> None:
        self.connected = True
        self._session_connected = True
        self.first_attempt.set()
        if self._down_since is not None:
            self.reconnects += 1
            log.warning(
                "breakers: Redis is back after %.1fs; resynced %d breakers",
                time.monotonic() - self._down_since,
                count,
            )
            self._down_since = None

    def _lost(self, exc: BaseException | None) -> None:
        self.connected = False
        if self._down_since is None:
            self._down_since = time.monotonic()
            if self._snapshot.loaded:
                log.warning(
                    "breakers: lost Redis (%s); answering from the last snapshot, reconnecting",
                    exc,
                )
            else:
                log.warning("breakers: cannot reach Redis (%s); retrying in the background", exc)

    def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is None:
            return
        # A connection that is already gone has nothing left to release.
        with contextlib.suppress(redis.RedisError, OSError):
            pubsub.close()
