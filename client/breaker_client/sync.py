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
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import redis

from breaker_client.errors import BreakerStoreUnavailable
from breaker_client.model import ROW_FORCED, ROW_REV, ROW_STATE, Record, RecordRow
from breaker_client.states import STATIC, UNTIL, Entry, compile_entry
from breaker_client.store import PRUNE_BATCH, Store

log = logging.getLogger(__name__)

T = TypeVar("T")

# Messages are waited for in slices this long so `stop()` returns promptly.
POLL_S = 0.2
# Reconnect quickly after a blip, but a fleet must not hammer a Redis that is restarting.
RECONNECT_FIRST_S = 0.1
RECONNECT_MAX_S = 2.0
# How long to wait for Redis to confirm the subscription before reading the full state.
SUBSCRIBE_CONFIRM_S = 2.0
# Breakers per round trip in a resync.
READ_CHUNK = 50
# The longest a resync works without letting the GIL go: a thread calling `is_open` waits for
# the sync thread at most this, plus one breaker's work (a few microseconds). A resync parses
# and compiles each breaker read from Redis (~5-10 us of Python) and checks the clock between
# two; a round trip alone lets the GIL go, but only for as long as Redis takes to answer.
WORK_SLICE_S = 0.0002
# A pause long enough for a thread waiting for the GIL to take it. Without it, a thread
# doing quick round trips takes the GIL back before the waiter wakes, and the waiter only
# gets it by force after the 5 ms switch interval: that is how `is_open` in another thread
# stalled behind a resync.
GIL_YIELD_S = 0.0002
# Rows freed between two looks at the clock when a full resync drops the maps it replaced.
FREE_BATCH = 64
# Tables that share equal texts between the rows of a full resync (see `SharedTexts`).
TEXT_SHARDS = 64

HotMap = dict[str, dict[str | None, Entry]]
# Rows by (name, shard of the key): no single dict holds 100,000 rows, so none grows by copying
# a table of megabytes (and faulting in its new pages) in one step while other threads wait for
# the GIL. `hot` stays one dict per name: `is_open` reads it, and it holds only what can refuse.
RowMap = dict[tuple[str, int], dict[str | None, RecordRow]]
# Rows of one name per shard at 100,000 keys: ~1,600, a table of ~100 KB.
ROW_SHARDS = 64


def _slot(name: str, key: str | None) -> tuple[str, int]:
    return name, hash(key) & (ROW_SHARDS - 1)


class Pacer:
    """Lets the GIL go once the sync thread has worked WORK_SLICE_S since it last did: call it
    between two pieces of work of a few microseconds each."""

    def __init__(self) -> None:
        self._due = time.perf_counter() + WORK_SLICE_S

    def __call__(self) -> None:
        if time.perf_counter() >= self._due:
            time.sleep(GIL_YIELD_S)
            self._due = time.perf_counter() + WORK_SLICE_S

    def each(self, items: Iterable[T]) -> Iterator[T]:
        """`items`, pausing between two when due (the work on each is the caller's)."""
        for item in items:
            yield item
            self()


class SharedTexts:
    """One object for equal texts across a full resync's rows: a reason or source that
    thousands of keys share is stored once. Spread over TEXT_SHARDS tables because texts
    distinct per key (an event id in each source) would grow one table to 100,000 entries,
    and a dict that grows copies its whole table in one step, holding the GIL."""

    def __init__(self) -> None:
        self.tables: list[dict[str, str]] = [{} for _ in range(TEXT_SHARDS)]

    def share(self, text: str) -> str:
        return self.tables[hash(text) & (TEXT_SHARDS - 1)].setdefault(text, text)


Timed = dict[tuple[str, str | None], float]
Maps = tuple[RowMap, HotMap, Timed | None]
# A change seen while a full resync was reading: (name, key, row or None if deleted, revision).
Pending = tuple[str, str | None, RecordRow | None, int | None]


class Snapshot:
    """Every breaker this process knows, plus the compiled `hot` map that `is_open` reads.

    `hot` holds only breakers that can refuse a call: a name with nothing open is absent, so
    the common answer is one failed dict lookup. A change replaces one key's entry with one
    dict store (O(1) whatever the number of keys), so a reader without a lock sees each
    breaker either before or after an update, never half of one; a full resync builds new
    maps outside the lock and swaps them in whole. Writers (the sync thread and threads that
    just wrote) serialise on `lock` and hold it only for O(1) work per breaker. Rows and
    entries are plain tuples (see `RecordRow`).
    """

    def __init__(self, now_ms: Callable[[], int]) -> None:
        self._now_ms = now_ms
        self.hot: HotMap = {}
        self.records: RowMap = {}
        self.loaded = False
        self.loaded_at: float | None = None
        # Every write and prune up to this Redis revision is in the snapshot (or superseded).
        self.revision = 0
        self.lock = threading.Lock()
        # While a full resync reads: the changes applied meanwhile, to replay on its result.
        self._pending: list[Pending] | None = None
        # Entries that change with time: (name, key) -> until; swept once they no longer do.
        self._timed: Timed = {}

    def apply(self, record: Record) -> None:
        """Store `record` unless this process already holds a newer revision of it."""
        self.apply_rows([record.row()])

    def apply_rows(self, rows: Iterable[RecordRow]) -> None:
        now_ms = self._now_ms()
        with self.lock:
            for row in rows:
                self._put(self._live(), row, now_ms)
                if self._pending is not None:
                    self._pending.append((row[0], row[1], row, None))

    def remove(self, name: str, key: str | None, rev: int | None = None) -> None:
        """Forget a breaker deleted at revision `rev` (None: unknown), unless held newer."""
        with self.lock:
            self._drop(self._live(), name, key, rev)
            if self._pending is not None:
                self._pending.append((name, key, None, rev))

    def record(self, name: str, key: str | None) -> Record | None:
        row = self.records.get(_slot(name, key), {}).get(key)
        return Record(*row) if row is not None else None

    def all_records(self) -> list[Record]:
        return [Record(*row) for row in self._rows()]

    def count(self) -> int:
        return sum(len(by_key) for by_key in list(self.records.values()))

    def not_plainly_closed(self) -> list[Record]:
        """Records that are not simply closed (a state other than closed, or an override),
        built only for those: the rest are checked on their rows, without an object each."""
        return [
            Record(*row)
            for row in self._rows()
            if row[ROW_STATE] != "closed" or row[ROW_FORCED] is not None
        ]

    def _rows(self) -> list[RecordRow]:
        with self.lock:
            return [row for by_key in self.records.values() for row in by_key.values()]

    # -- a full resync: read everything without holding the lock, then swap ----------------

    def begin_full(self) -> None:
        with self.lock:
            self._pending = []

    def abort_full(self) -> None:
        with self.lock:
            self._pending = None

    def build(self, rows: Iterable[RecordRow], into: Maps) -> None:
        """Add rows to maps that nobody reads yet (no lock: they are the resync's own)."""
        now_ms = self._now_ms()
        for row in rows:
            self._put(into, row, now_ms)

    def finish_full(self, built: Maps, revision: int) -> Maps:
        """Make the resync's maps current, replaying changes applied while it read; returns
        the maps it replaced, for the caller to free a slice at a time (`free_slowly`)."""
        now_ms = self._now_ms()
        with self.lock:
            for name, key, row, rev in self._pending or ():
                if row is None:
                    self._drop(built, name, key, rev)
                else:
                    self._put(built, row, now_ms)
            self._pending = None
            old = self._live()
            self.records, self.hot, timed = built
            self._timed = timed if timed is not None else {}
            self.revision = max(self.revision, revision)
            self.loaded = True
            self.loaded_at = time.monotonic()
        return old

    def advance(self, revision: int) -> None:
        with self.lock:
            self.revision = max(self.revision, revision)

    def sweep(self) -> None:
        """Recompile entries whose time-dependent part ended (a ramp done, an override over)."""
        now_ms = self._now_ms()
        with self.lock:
            due = [target for target, until in self._timed.items() if until * 1000 <= now_ms]
            for name, key in due:
                row = self.records.get(_slot(name, key), {}).get(key)
                self._timed.pop((name, key), None)
                if row is not None:
                    self._publish(self.hot, name, key, compile_entry(row, now_ms), self._timed)

    def after_fork(self) -> None:
        # The parent's writer may have held the lock at fork time; the data is consistent
        # (updates are single reference stores), only the lock must be new.
        self.lock = threading.Lock()

    def _live(self) -> Maps:
        return self.records, self.hot, self._timed

    # -- O(1) per breaker; `timed` is None for maps a full resync is still building ----------

    def _put(self, maps: Maps, row: RecordRow, now_ms: int) -> None:
        records, hot, timed = maps
        name, key = row[0], row[1]
        slot = _slot(name, key)
        by_key = records.get(slot)
        if by_key is None:
            by_key = records[slot] = {}
        held = by_key.get(key)
        if held is not None and held[ROW_REV] > row[ROW_REV]:
            return
        by_key[key] = row
        self._publish(hot, name, key, compile_entry(row, now_ms), timed)

    def _drop(self, maps: Maps, name: str, key: str | None, rev: int | None) -> None:
        records, hot, timed = maps
        slot = _slot(name, key)
        by_key = records.get(slot)
        held = by_key.get(key) if by_key is not None else None
        if by_key is None or held is None or (rev is not None and held[ROW_REV] > rev):
            return
        del by_key[key]
        if not by_key:
            del records[slot]
        self._publish(hot, name, key, None, timed)

    @staticmethod
    def _publish(
        hot: HotMap,
        name: str,
        key: str | None,
        entry: Entry | None,
        timed: Timed | None,
    ) -> None:
        by_key = hot.get(name)
        if entry is None:
            if by_key is not None and by_key.pop(key, None) is not None and not by_key:
                del hot[name]
        elif by_key is None:
            hot[name] = {key: entry}
        else:
            by_key[key] = entry
        if timed is not None:
            if entry is not None and not entry[STATIC]:  # a ramp or an override that ends
                timed[(name, key)] = entry[UNTIL]
            else:
                timed.pop((name, key), None)


def free_slowly(tables: Iterable[dict[Any, Any] | None], pace: Pacer) -> None:
    """Empty tables nobody reads any more (and the dicts they hold) a batch at a time:
    dropping 100,000 rows at once would hold the GIL for milliseconds while every other
    thread waits."""
    for table in tables:
        if table is None:
            continue
        for inner in list(table.values()):
            if isinstance(inner, dict):
                _empty_slowly(inner, pace)
        _empty_slowly(table, pace)


def _empty_slowly(table: dict[Any, Any], pace: Pacer) -> None:
    while table:
        for _ in range(min(FREE_BATCH, len(table))):
            table.popitem()
        pace()


class Syncer:
    """Runs the subscriber thread for one `Breakers`; all Redis reads for the snapshot go here."""

    def __init__(
        self,
        store: Store,
        snapshot: Snapshot,
        *,
        resync_interval: float,
        idle_ttl: float | None = None,
        now_ms: Callable[[], int] | None = None,
    ) -> None:
        if resync_interval <= 0:
            raise ValueError(f"resync_interval must be positive seconds, got {resync_interval}")
        if idle_ttl is not None and idle_ttl <= 0:
            raise ValueError(f"idle_ttl must be positive seconds or None, got {idle_ttl}")
        self._store = store
        self._snapshot = snapshot
        self.resync_interval = resync_interval
        self.idle_ttl = idle_ttl
        self._now_ms = now_ms or (lambda: int(time.time() * 1000))
        self.pruned = 0
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

    def resync(self, *, full: bool = False) -> int:
        """Bring the snapshot up to Redis; returns how many breakers it holds.

        Reads only what was written or pruned since the last resync, unless `full` (or nothing
        is loaded yet, or Redis's revision went back: it lost its data): then every breaker.
        """
        try:
            snap = self._snapshot
            if full or not snap.loaded or snap.revision == 0:
                self._full()
            else:
                self._incremental()
        except BreakerStoreUnavailable:
            self.resync_errors += 1
            raise
        self.resyncs += 1
        return self._snapshot.count()

    def _incremental(self) -> None:
        snap = self._snapshot
        since = snap.revision
        pace = Pacer()
        while True:
            counter, changed = self._store.changed_since(since, READ_CHUNK)
            if counter < since:
                log.warning(
                    "breakers: Redis's revision went back (%d < %d), it lost its data; "
                    "reading every breaker again",
                    counter,
                    since,
                )
                self._full()
                return
            rows = self._store.read_rows([member for member, _ in changed])
            self._take(list(pace.each(rows)), dict(changed))
            if changed:
                since = changed[-1][1]
            if len(changed) < READ_CHUNK:
                break
            pace()
        snap.advance(since)
        snap.sweep()

    def _full(self) -> None:
        snap = self._snapshot
        snap.begin_full()
        pace = Pacer()
        texts = SharedTexts()
        try:
            # Read first: whatever is written from now on has a higher revision, so the next
            # incremental resync picks up anything this scan misses.
            revision = self._store.revision()
            built: Maps = ({}, {}, {})
            cursor = 0
            while True:
                cursor, members = self._store.scan_index(cursor, READ_CHUNK)
                # Each row is parsed as it is built, and the GIL let go between two when due.
                rows = pace.each(self._store.read_rows(members, texts.share, age=True))
                snap.build((row for _, row in rows if row is not None), built)
                if cursor == 0:
                    break
                pace()
        except BaseException:
            snap.abort_full()
            raise
        free_slowly((*snap.finish_full(built, revision), *texts.tables), pace)

    def _take(self, rows: list[tuple[str, RecordRow | None]], tombstones: dict[str, int]) -> None:
        """Apply rows read from Redis; a member with no record is forgotten."""
        self._snapshot.apply_rows([row for _, row in rows if row is not None])
        for member, row in rows:
            if row is None:
                name, key = self._store.keys.split_member(member)
                self._snapshot.remove(name, key, tombstones.get(member))

    def prune(self) -> int:
        """Delete breakers idle for `idle_ttl` and closed (see `lua.PRUNE`); returns how many."""
        if self.idle_ttl is None:
            return 0
        idle_ms = max(1, int(self.idle_ttl * 1000))
        total = 0
        while True:
            examined, pruned = self._store.prune(now_ms=self._now_ms(), idle_ms=idle_ms)
            for member, rev in pruned:
                self._snapshot.remove(*self._store.keys.split_member(member), rev)
            total += len(pruned)
            # Every breaker a step looked at leaves its range, so this ends.
            if examined < PRUNE_BATCH:
                break
        self.pruned += total
        return total

    def reload(self, member: str) -> None:
        rows = list(self._store.read_rows([member]))
        tombstones = {}
        if rows[0][1] is None:
            revision = self._store.tombstone(member)
            tombstones = {member: revision} if revision is not None else {}
        self._take(rows, tombstones)

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
        count = self.resync(full=True)
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
                self.resync(full=True)
            if time.monotonic() >= next_resync:
                self.resync()
                self.prune()
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
