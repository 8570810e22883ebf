"""The client with many keys: a change and a resync cost what changed, not what exists."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import breaker_client.sync as sync_module
import pytest
import redis as redis_lib
from breaker_client import Breakers
from breaker_client.model import Record, RecordRow

from router.keys import BreakerKeys
from tests.test_client_sync import wait_until

MakeBreakers = Callable[..., Breakers]
KEYS = 300


@pytest.fixture
def make_breakers(redis_url: str, key_prefix: str) -> Iterator[MakeBreakers]:
    made: list[Breakers] = []

    def make(**options: Any) -> Breakers:
        options.setdefault("prefix", key_prefix)
        breakers = Breakers.from_url(redis_url, **options)
        made.append(breakers)
        if not options.get("sync", True):
            breakers.refresh()
        return breakers

    yield make
    for breakers in made:
        breakers.stop()


@pytest.fixture
def compiled(monkeypatch: pytest.MonkeyPatch) -> list[RecordRow]:
    """Every row the snapshot compiles for `is_open`, in order."""
    seen: list[Any] = []
    real = sync_module.compile_entry

    def counting(row: Any, now_ms: int) -> Any:
        seen.append(row)
        return real(row, now_ms)

    monkeypatch.setattr(sync_module, "compile_entry", counting)
    return seen


def muted(breakers: Breakers) -> Breakers:
    """Make `breakers` write through the real scripts but publish where nobody listens."""

    class Muted(BreakerKeys):
        @property
        def channel(self) -> str:
            return f"{self.prefix}:nobody-listens"

    breakers._store.keys = Muted(breakers.keys.prefix)
    return breakers


def open_many(breakers: Breakers, n: int = KEYS) -> None:
    breakers.apply_snapshot("bank", {f"{i:04d}": "Alert" for i in range(n)}, reason="storm")


def test_a_change_recompiles_only_the_key_it_changes(
    make_breakers: MakeBreakers, compiled: list[RecordRow]
) -> None:
    b = make_breakers(sync=False)
    open_many(b)
    compiled.clear()
    b.close("bank", "0007", reason="recovered", ramp=False)
    assert [row[1] for row in compiled] == ["0007"]
    assert not b.is_open("bank", "0007") and b.is_open("bank", "0008")


def test_a_snapshot_of_many_groups_compiles_each_group_once(
    make_breakers: MakeBreakers, compiled: list[RecordRow]
) -> None:
    b = make_breakers(sync=False)
    open_many(b)
    assert len(compiled) == KEYS
    assert all(b.is_open("bank", f"{i:04d}") for i in range(KEYS))


def test_a_periodic_resync_reads_only_what_changed_and_repairs_a_lost_message(
    make_breakers: MakeBreakers, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = make_breakers(sync=False)
    open_many(writer)
    reader = make_breakers(resync_interval=0.05)
    assert reader.is_open("bank", "0001")
    read: list[str] = []
    real = reader._store.read_rows

    def counting(members: list[str], *args: Any, **kwargs: Any) -> Any:
        read.extend(members)
        return real(members, *args, **kwargs)

    monkeypatch.setattr(reader._store, "read_rows", counting)
    resyncs = reader.stats()["resyncs"]
    assert wait_until(lambda: reader.stats()["resyncs"] >= resyncs + 3, 5.0)
    assert read == []  # nothing changed: nothing read

    muted(writer).close("bank", "0001", reason="recovered; its message is lost", ramp=False)
    assert wait_until(lambda: not reader.is_open("bank", "0001"), 5.0)
    assert read == ["bank:0001"] and reader.stats()["messages"] == 0


def test_a_full_resync_reads_without_the_lock_and_keeps_a_write_made_meanwhile(
    make_breakers: MakeBreakers, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = make_breakers(sync=False)
    open_many(b)
    real = b._store.read_rows
    calls = 0
    lock_free: list[bool] = []

    def write_meanwhile(members: list[str], *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        lock_free.append(not b._snap.lock.locked())
        if calls == 2:  # the resync has read some keys already; this one may come later
            done = threading.Thread(target=lambda: b.close("bank", "0000", reason="ok", ramp=False))
            done.start()
            done.join(5)
        return real(members, *args, **kwargs)

    monkeypatch.setattr(b._store, "read_rows", write_meanwhile)
    b.refresh()
    assert calls > 2 and all(lock_free)
    assert not b.is_open("bank", "0000") and b.is_open("bank", "0001")
    assert b.stats()["breakers"] == KEYS


def test_a_redis_that_lost_its_data_is_read_again_in_full(
    make_breakers: MakeBreakers, redis: redis_lib.Redis, key_prefix: str
) -> None:
    writer = make_breakers(sync=False)
    open_many(writer, 20)
    reader = make_breakers(resync_interval=0.05)
    assert reader.stats()["breakers"] == 20
    redis.delete(*redis.keys(f"{key_prefix}:*"))  # a restart without persistence, say
    muted(writer).open("other", reason="the first write after the loss")
    assert wait_until(lambda: reader.stats()["breakers"] == 1, 5.0)
    assert reader.is_open("other") and not reader.is_open("bank", "0001")


def test_the_garbage_collector_stops_tracking_the_snapshot(make_breakers: MakeBreakers) -> None:
    # Full collections then cost nothing per key, so 100,000 keys cannot lengthen them.
    b = make_breakers(sync=False, ramp_window=3600)
    open_many(b)
    b.close("bank", "0001", reason="ramping")
    b.force_open("bank", "0002", reason="held", by="ana", expires_in=60)
    b.refresh()
    # A collection untracks a row, and an entry once its row is untracked: two at most.
    gc.collect()
    gc.collect()
    rows = [row for by_key in b._snap.records.values() for row in by_key.values()]
    entries = [entry for by_key in b._snap.hot.values() for entry in by_key.values()]
    assert len(rows) == len(entries) == KEYS
    assert not any(gc.is_tracked(item) for item in rows + entries)
    assert b.is_open("bank", "0002") and b.is_open("bank", "0003")


def test_a_breaker_written_before_last_write_times_existed_gets_one(
    make_breakers: MakeBreakers, redis: redis_lib.Redis, key_prefix: str
) -> None:
    keys = BreakerKeys(key_prefix)
    # As the scripts of the previous version left it: no revision, no last-write time.
    redis.hset(keys.record("bank:0001"), mapping={"state": "closed", "updated_ms": 5, "rev": 3})
    redis.sadd(keys.index, "bank:0001")
    b = make_breakers(sync=False, clock=lambda: 1_700_000_000.0)
    assert redis.zscore(keys.written, "bank:0001") == 5
    assert b.prune() == 1


@pytest.mark.parametrize("sync", [True, False])
def test_a_dropped_handle_is_freed_at_once_not_by_a_full_collection(
    redis_url: str, key_prefix: str, sync: bool
) -> None:
    """A handle in a reference cycle would wait for a full collection, which then frees its
    whole snapshot in one go, in whatever thread it runs: tens of ms at 100,000 breakers."""
    b = Breakers.from_url(redis_url, prefix=key_prefix, sync=sync)
    b.open("bank", "0001", reason="alert")
    b.stop()
    ref = weakref.ref(b)
    gc.disable()
    try:
        del b
        assert ref() is None
    finally:
        gc.enable()


def test_no_dict_of_the_snapshot_holds_every_row_of_a_large_name() -> None:
    """A dict that grows copies its whole table in one step, holding the GIL: at 100,000 rows in
    one dict, ~5 MB and ~4 ms of page faults during a full resync. Rows are sharded instead."""
    snap = sync_module.Snapshot(lambda: 1_700_000_000_000)
    rows = [Record(name="bank", key=f"{i:05d}", rev=i + 1).row() for i in range(20_000)]
    snap.apply_rows(rows)
    assert snap.count() == 20_000
    assert max(len(by_key) for by_key in snap.records.values()) < 20_000 / 16
    assert snap.record("bank", "00042") == Record(name="bank", key="00042", rev=43)
    snap.remove("bank", "00042")
    assert snap.record("bank", "00042") is None and snap.count() == 19_999


class SlowClock:
    """`time` for the sync module, where building each row takes `per_row_s` of the clock
    that paces a resync, and every pause is recorded with the rows built since the last."""

    def __init__(self, per_row_s: float) -> None:
        self.now = 0.0
        self.per_row_s = per_row_s
        self.rows_since_pause = 0
        self.rows_between_pauses: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def perf_counter(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.rows_between_pauses.append(self.rows_since_pause)
        self.rows_since_pause = 0
        time.sleep(seconds)

    def row_built(self) -> None:
        self.now += self.per_row_s
        self.rows_since_pause += 1


def test_a_full_resync_lets_other_threads_run_after_each_slice_of_its_work(
    make_breakers: MakeBreakers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread calling `is_open` waits for the GIL as long as the sync thread works without
    letting it go: a resync pauses once it has worked WORK_SLICE_S, whatever its chunk of rows
    read from Redis holds (50 rows of ~10 us each held it ~0.5-1.7 ms at a stretch)."""
    b = make_breakers(sync=False)
    open_many(b)
    per_row_s = sync_module.WORK_SLICE_S / 4
    clock = SlowClock(per_row_s)
    real = sync_module.compile_entry

    def slow_compile(row: Any, now_ms: int) -> Any:
        clock.row_built()
        return real(row, now_ms)

    monkeypatch.setattr(sync_module, "compile_entry", slow_compile)
    monkeypatch.setattr(sync_module, "time", clock)
    b.refresh()
    assert sum(clock.rows_between_pauses) + clock.rows_since_pause == KEYS
    assert max(clock.rows_between_pauses) <= 5  # one slice of 4 rows, and the row ending it
    assert b.stats()["breakers"] == KEYS and b.is_open("bank", "0001")


def test_texts_distinct_per_key_grow_no_single_table_and_equal_ones_are_one_object(
    make_breakers: MakeBreakers,
) -> None:
    """Every key's source names its own event, so a full resync of 100,000 keys would grow
    one table of texts to 100,000 entries (a resize copies it in one step holding the GIL:
    ~4-6 ms). The texts are spread over tables; a reason many keys share is still one object."""
    texts = sync_module.SharedTexts()
    sources = [f"monitor:1 event:{7_000_000 + i}" for i in range(20_000)]
    assert [texts.share(s) for s in sources] == sources
    assert max(len(table) for table in texts.tables) < len(sources) / 16
    shared = "storm: bank charge errors"
    assert texts.share("".join(shared)) is texts.share(shared)

    b = make_breakers(sync=False)
    open_many(b, 20)
    b.refresh()
    rows = [row for by_key in b._snap.records.values() for row in by_key.values()]
    assert len(rows) == 20 and len({id(row[3]) for row in rows}) == 1  # the reason, once
