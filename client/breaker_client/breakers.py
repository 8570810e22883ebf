"""`Breakers`: what a service imports to ask "may I call this vendor?" and to flip breakers.

`is_open` answers from a process-local snapshot (`breaker_client.sync`) and never touches the
network; writes go to Redis in one Lua script each (`breaker_client.store`) and reach every
process through the change channel. A breaker is a name plus an optional key: the keyless
breaker stands for the whole vendor, so `is_open(name, key)` is also true while the keyless
breaker `name` refuses calls (whole vendor down means every key is down). The two are
checked independently: forcing the keyless breaker closed does not let calls through to a
key whose own breaker is open, and forcing a key closed does not override an open vendor.
"""

from __future__ import annotations

import builtins
import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from breaker_client.connect import (
    connect,
    decodes_responses,
    hash_tagged,
    is_cluster,
    reset_after_fork,
)
from breaker_client.errors import BreakerOpen
from breaker_client.keys import DEFAULT_BREAKER_PREFIX, BreakerKeys
from breaker_client.model import BreakerState, HistoryEntry, Record
from breaker_client.shadow import DEFAULT_SHADOW_FLUSH_S, ShadowTally
from breaker_client.states import (
    ROW,
    SHADOW,
    SHARE0,
    SLOPE,
    STATIC,
    Entry,
    breaker_state,
    denies,
    effective_state,
    shadow_lets,
)
from breaker_client.store import DEFAULT_HISTORY_MAX, Store
from breaker_client.sync import Snapshot, Syncer
from breaker_client.writes import BreakerWriter, check_target

log = logging.getLogger(__name__)

FailMode = Literal["allow", "deny"]

# A vendor just back gets a growing share of calls over this window instead of all at once.
DEFAULT_RAMP_WINDOW_S = 60.0
# Bounds staleness when a change message is lost; one cheap read of every breaker.
DEFAULT_RESYNC_INTERVAL_S = 30.0
# Writes happen in callback handlers that the router retries: fail fast, never hang a request.
SOCKET_TIMEOUT_S = 2.0
CONNECT_TIMEOUT_S = 1.0
# Pings an idle subscription so a silently dead connection is noticed and replaced.
HEALTH_CHECK_INTERVAL_S = 10
# How long `from_url` waits for the first snapshot; a down Redis answers "refused" at once.
DEFAULT_STARTUP_WAIT_S = 2.0
# A closed breaker nobody wrote to for this long is deleted: far beyond any retry or replay
# of an event about it, so no order between events is lost, while a fleet that names a new
# key per customer or per deploy does not grow its Redis and every process's snapshot for good.
DEFAULT_IDLE_TTL_S = 30 * 24 * 3600.0

# Every live instance, so a forked child can reset them all (a WeakSet: no leak).
_live: weakref.WeakSet[Breakers] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for breakers in list(_live):
        breakers._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Breakers(BreakerWriter):
    """Breaker flags shared through Redis, read locally. Build one per process with `from_url`."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = DEFAULT_BREAKER_PREFIX,
        fail_mode: FailMode = "allow",
        resync_interval: float = DEFAULT_RESYNC_INTERVAL_S,
        ramp_window: float = DEFAULT_RAMP_WINDOW_S,
        history_max: int = DEFAULT_HISTORY_MAX,
        idle_ttl: float | None = DEFAULT_IDLE_TTL_S,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
        sync: bool = True,
        shadow_flush_interval: float = DEFAULT_SHADOW_FLUSH_S,
    ) -> None:
        """Use `client` (made with `decode_responses=True`); `sync=False` makes a write-only handle.

        `clock` returns Unix seconds and `rng` a float in [0, 1); tests inject both. The ramp
        window is stored with each recovery, so every process ramps the same way. The sync
        thread prunes breakers closed and unwritten for `idle_ttl` seconds after each periodic
        resync (None: this process never prunes; the shortest setting in a fleet wins).
        Would-be refusals of breakers in shadow mode are written every
        `shadow_flush_interval` seconds.
        """
        if not decodes_responses(client):
            raise ValueError("Breakers needs a Redis client made with decode_responses=True")
        if fail_mode not in ("allow", "deny"):
            raise ValueError(f"fail_mode must be 'allow' or 'deny', got {fail_mode!r}")
        if ramp_window < 0:
            raise ValueError(f"ramp_window must be >= 0 seconds, got {ramp_window}")
        # In a Cluster every script's keys must share a slot (see `connect.hash_tagged`).
        self.keys = BreakerKeys(hash_tagged(prefix) if is_cluster(client) else prefix)
        self.fail_mode: FailMode = fail_mode
        self.ramp_window = ramp_window
        self._clock = clock
        self._rng = rng
        self._sync = sync
        self._store = Store(client, self.keys, history_max=history_max)
        # The snapshot and the sync thread get a clock that does not hold `self`: with no
        # reference cycle, a handle dropped with 100,000 breakers is freed at once, not by a
        # later full collection that lasts as long as freeing them (tens of ms, in any thread).
        now_ms = _ms_clock(clock)
        self._snap = Snapshot(now_ms)
        self._syncer = Syncer(
            self._store,
            self._snap,
            resync_interval=resync_interval,
            idle_ttl=idle_ttl,
            now_ms=now_ms,
        )
        # Calls breakers in shadow mode let through; a thread writes them every interval.
        self._shadow = ShadowTally(self._store, interval=shadow_flush_interval)
        # `is_open` takes its fast path only once the snapshot is loaded and the sync thread
        # runs in this process; everything else (first use after a fork too) goes slow once.
        self._fast = False
        self._fail_lock = threading.Lock()
        self._fail_logged = False
        self.fail_mode_answers = 0
        _live.add(self)
        if sync:
            self._syncer.start()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = DEFAULT_BREAKER_PREFIX,
        fail_mode: FailMode = "allow",
        resync_interval: float = DEFAULT_RESYNC_INTERVAL_S,
        ramp_window: float = DEFAULT_RAMP_WINDOW_S,
        history_max: int = DEFAULT_HISTORY_MAX,
        idle_ttl: float | None = DEFAULT_IDLE_TTL_S,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
        sync: bool = True,
        startup_wait: float = DEFAULT_STARTUP_WAIT_S,
        shadow_flush_interval: float = DEFAULT_SHADOW_FLUSH_S,
    ) -> Breakers:
        """Connect with short timeouts and no retries, and wait briefly for the first snapshot.

        `url` is one server, a Sentinel or a Cluster (see `breaker_client.connect`).
        Options are those of `Breakers(...)`. A Redis that is down does not delay start-up
        beyond `startup_wait`; `is_open` then answers per `fail_mode` until it loads.
        """
        client = connect(
            url,
            decode_responses=True,
            socket_timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            health_check_interval=HEALTH_CHECK_INTERVAL_S,
            # redis-py's default retries turn one refused connection into seconds of waiting.
            retry=Retry(NoBackoff(), 0),
            client_name="breakers",
        )
        breakers = cls(
            client,
            prefix=prefix,
            fail_mode=fail_mode,
            resync_interval=resync_interval,
            ramp_window=ramp_window,
            history_max=history_max,
            idle_ttl=idle_ttl,
            clock=clock,
            rng=rng,
            sync=sync,
            shadow_flush_interval=shadow_flush_interval,
        )
        if breakers._sync and startup_wait > 0:
            breakers.wait_ready(startup_wait)
        return breakers

    # -- reading: the hot path ------------------------------------------------------------

    def is_open(self, name: str, key: str | None = None) -> bool:
        """True when a call to `name` (for `key`) should not be made now. No network I/O."""
        if not self._fast and not self._ensure_ready():
            return self._fail_mode_answer()
        by_key = self._snap.hot.get(name)
        if by_key is None:
            return False
        # Inlined (no helper call): an entry is True (refuse), a ramp (False) or an override
        # that ends (None), see `Entry`. A refusal of an entry in shadow mode (or of a name
        # whose keyless one is) is counted and let through by `_shadow_lets`; the key's then
        # still leaves the keyless to answer. A ramp's rng and clock are read
        # into locals and its comparison the condition of an `if`: CPython 3.11 specialises
        # neither `self._rng()` (a method lookup that finds an instance attribute) nor a float
        # comparison whose result is stored, and the ramp paid ~25 ns for them (see the ramp
        # figures in docs/benchmarks.md).
        if key is not None:
            entry = by_key.get(key)
            if entry is not None:
                static = entry[STATIC]
                if static:
                    if not (entry[SHADOW] or None in by_key) or not self._shadow_lets(
                        by_key, name, key, entry
                    ):
                        return True
                elif static is False:
                    rng, clock = self._rng, self._clock
                    if rng() >= entry[SHARE0] + entry[SLOPE] * clock() and (
                        not (entry[SHADOW] or None in by_key)
                        or not self._shadow_lets(by_key, name, key, entry)
                    ):
                        return True
                elif denies(entry, self._clock(), self._rng) and (
                    not (entry[SHADOW] or None in by_key)
                    or not self._shadow_lets(by_key, name, key, entry)
                ):
                    return True
        entry = by_key.get(None)
        if entry is None:
            return False
        static = entry[STATIC]
        if static is False:
            rng, clock = self._rng, self._clock
            if rng() < entry[SHARE0] + entry[SLOPE] * clock():
                return False
        elif static is None and not denies(entry, self._clock(), self._rng):
            return False
        return not entry[SHADOW] or not self._shadow_lets(by_key, name, None, entry)

    def _shadow_lets(
        self, by_key: dict[str | None, Entry], name: str, which: str | None, entry: Entry
    ) -> bool:
        """`entry` refuses this call: unless shadow mode lets it through (and counts it)."""
        now_ms = self._now_ms()
        if not shadow_lets(entry, by_key.get(None), now_ms):
            return False
        self._shadow.add(name, which, now_ms)
        return True

    def check(self, name: str, key: str | None = None) -> None:
        """Raise `BreakerOpen` (naming breaker, state, reason, since) if a call must not be made.

        Answers as `is_open` does: a breaker in shadow mode counts the call and lets it through."""
        if not self._ensure_ready():
            if self._fail_mode_answer():
                raise BreakerOpen(
                    name,
                    key,
                    state="unknown",
                    reason="no breaker snapshot loaded yet (Redis unreachable?); fail_mode=deny",
                    since_ms=None,
                    breaker_key=key,
                )
            return
        by_key = self._snap.hot.get(name)
        if by_key is None:
            return
        for which in (key, None) if key is not None else (None,):
            entry = by_key.get(which)
            if entry is None:
                continue
            if entry[STATIC] or denies(entry, self._clock(), self._rng):
                if self._shadow_lets(by_key, name, which, entry):
                    continue
                state = breaker_state(Record(*entry[ROW]), self._now_ms())
                raise BreakerOpen(
                    name,
                    key,
                    state=state.state,
                    reason=_describe(state),
                    since_ms=state.since_ms,
                    breaker_key=which,
                )

    @contextmanager
    def guard(self, name: str, key: str | None = None) -> Iterator[None]:
        """`with breakers.guard("bank-charge", code): call_vendor()`; raises `BreakerOpen`."""
        self.check(name, key)
        yield

    def _ensure_ready(self) -> bool:
        """Start the sync thread here if needed (first use after a fork); True once loaded."""
        if self._sync and not self._syncer.running:
            self._syncer.start()
        if not self._snap.loaded:
            return False
        self._fast = not self._sync or self._syncer.running
        return True

    def _fail_mode_answer(self) -> bool:
        with self._fail_lock:
            self.fail_mode_answers += 1
            first = not self._fail_logged
            self._fail_logged = True
        if first:
            log.warning(
                "breakers: no snapshot loaded (Redis unreachable or not yet read); answering "
                "is_open per fail_mode=%s (%s calls) until one loads",
                self.fail_mode,
                "refusing" if self.fail_mode == "deny" else "allowing",
            )
        return self.fail_mode == "deny"

    # -- inspecting -------------------------------------------------------------------------

    def state(self, name: str, key: str | None = None, *, local: bool = False) -> BreakerState:
        """The breaker as Redis holds it now (`local=True`: as this process's snapshot holds it).

        A breaker never written reads as closed."""
        check_target(name, key)
        record = self._snap.record(name, key) if local else self._store.read(name, key)
        return breaker_state(record or Record(name=name, key=key), self._now_ms())

    def list(self, *, local: bool = False) -> builtins.list[BreakerState]:
        """Every breaker ever written, sorted by name and key, with its state now."""
        records = self._snap.all_records() if local else self._store.read_all()
        now_ms = self._now_ms()
        states = [breaker_state(record, now_ms) for record in records]
        return sorted(states, key=lambda s: (s.name, s.key or ""))

    def history(
        self, name: str, key: str | None = None, *, limit: int = 100
    ) -> builtins.list[HistoryEntry]:
        """The breaker's latest changes, newest first (at most `history_max` are kept)."""
        check_target(name, key)
        return self._store.history(name, key, limit)

    def shadow_counts(
        self, targets: Iterable[tuple[str, str | None]]
    ) -> dict[tuple[str, str | None], int]:
        """Calls each breaker let through in shadow mode that it would have refused, as Redis
        holds them (every process's, written every `shadow_flush_interval`); zero left out."""
        members = {self.keys.member(name, key): (name, key) for name, key in targets}
        totals = self._store.shadow_totals(list(members))
        return {members[member]: total for member, total in totals.items()}

    def shadow_timeline(self, name: str, key: str | None = None) -> dict[int, int]:
        """One breaker's would-be refusals by minute (its start in Unix ms), oldest first."""
        check_target(name, key)
        return dict(sorted(self._store.shadow_buckets(self.keys.member(name, key)).items()))

    def flush_shadow(self) -> int:
        """Write this process's would-be refusals to Redis now; returns how many calls."""
        return self._shadow.flush()

    def delivery_seen(self, webhook_id: str) -> bool:
        """Whether a callback delivery with this `webhook-id` was already handled."""
        return self._store.delivery_seen(webhook_id)

    def mark_delivery_seen(self, webhook_id: str, ttl_s: float) -> None:
        self._store.mark_delivery_seen(webhook_id, ttl_s)

    def stats(self) -> dict[str, Any]:
        """Counters and gauges for a service's metrics endpoint (no Prometheus dependency here).

        Counting breakers not closed looks at every breaker's row and builds a record for each
        one that is not plainly closed (about 60 ms at 100,000 breakers with a tenth of them
        open; it built one for every breaker, 450 ms): call it from a metrics scrape, not per
        request."""
        snap = self._snap
        now_ms = self._now_ms()
        notable = snap.not_plainly_closed()
        age = None if snap.loaded_at is None else time.monotonic() - snap.loaded_at
        return {
            "pid": os.getpid(),
            "loaded": snap.loaded,
            "connected": self._syncer.connected,
            "sync_running": self._syncer.running,
            "snapshot_age_s": age,
            "breakers": snap.count(),
            "breakers_not_closed": sum(
                1 for record in notable if effective_state(record, now_ms) != "closed"
            ),
            "resyncs": self._syncer.resyncs,
            "resync_errors": self._syncer.resync_errors,
            "messages": self._syncer.messages,
            "reconnects": self._syncer.reconnects,
            "pruned": self._syncer.pruned,
            "fail_mode": self.fail_mode,
            "fail_mode_answers": self.fail_mode_answers,
            "shadow_refusals": self._shadow.counted,
            "shadow_unflushed": self._shadow.pending(),
            "shadow_flush_errors": self._shadow.flush_errors,
        }

    # -- lifecycle --------------------------------------------------------------------------

    def refresh(self) -> int:
        """Reload every breaker from Redis now (what the sync thread does periodically)."""
        count = self._syncer.resync()
        if not self._sync:
            self._fast = True
        return count

    def prune(self) -> int:
        """Delete breakers closed and unwritten for `idle_ttl` now; returns how many.

        The sync thread does this after each periodic resync; a write racing it is never lost.
        """
        return self._syncer.prune()

    def wait_ready(self, timeout: float) -> bool:
        """Wait up to `timeout` s for the first snapshot (or a failed attempt); True if loaded."""
        self._ensure_ready()
        self._syncer.first_attempt.wait(timeout)
        return self._snap.loaded

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the sync thread and close connections; `is_open` keeps the last snapshot."""
        self._syncer.stop(timeout)
        self._shadow.stop(timeout)
        self._store.client.close()

    def __enter__(self) -> Breakers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _after_fork(self) -> None:
        self._fast = False
        self._fail_lock = threading.Lock()
        self._snap.after_fork()
        self._syncer.after_fork()
        self._shadow.after_fork()
        # New sockets for the child; the parent's stay the parent's (redis-py never shuts
        # down a socket from another pid, it only drops its copy).
        reset_after_fork(self._store.client)


def _ms_clock(clock: Callable[[], float]) -> Callable[[], int]:
    return lambda: int(clock() * 1000)


def _describe(state: BreakerState) -> str:
    if state.state == "recovering" and state.ramp_share is not None:
        return f"recovering, {state.ramp_share:.0%} of calls let through: {state.reason}"
    if state.forced:
        until = ""
        if state.expires_at_ms is not None:
            until = f" until {_iso(state.expires_at_ms)}"
        return f"forced by {state.forced_by}{until}: {state.reason}"
    return state.reason


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")
