"""Breaker writes and reads against a real Redis: versions, ramp, overrides, snapshots, history."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis as redis_lib
from breaker_client import BreakerOpen, Breakers, BreakerState, GroupStatus

from router.keys import BreakerKeys

T0 = 1_700_000_000.0
T0_MS = int(T0 * 1000)


class Clock:
    """Unix seconds that move only when a test says so."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


MakeBreakers = Callable[..., Breakers]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_breakers(redis_url: str, key_prefix: str, clock: Clock) -> Iterator[MakeBreakers]:
    made: list[Breakers] = []

    def make(**options: Any) -> Breakers:
        options.setdefault("prefix", key_prefix)
        options.setdefault("clock", clock)
        breakers = Breakers.from_url(redis_url, **options)
        made.append(breakers)
        return breakers

    yield make
    for breakers in made:
        breakers.stop()


@pytest.fixture
def breakers(make_breakers: MakeBreakers) -> Breakers:
    # Write-only handle: reads come from refresh() or the writes themselves, never a thread.
    b = make_breakers(sync=False)
    b.refresh()
    return b


def test_open_key_opens_only_that_key(breakers: Breakers) -> None:
    result = breakers.open("bank-charge", "0001", reason="5xx rate", version=T0_MS, source="m:1")
    assert (result.outcome, result.old_state, result.new_state) == ("changed", "closed", "open")
    assert breakers.is_open("bank-charge", "0001")
    assert not breakers.is_open("bank-charge", "0002")
    assert not breakers.is_open("bank-charge")
    assert not breakers.is_open("other-vendor", "0001")
    state = breakers.state("bank-charge", "0001")
    assert (state.state, state.reason, state.source, state.version) == (
        "open",
        "5xx rate",
        "m:1",
        T0_MS,
    )


def test_keyless_breaker_opens_every_key(breakers: Breakers) -> None:
    breakers.open("bank-charge", reason="vendor down")
    assert breakers.is_open("bank-charge")
    assert breakers.is_open("bank-charge", "0001")
    assert breakers.is_open("bank-charge", "never-seen")
    breakers.close("bank-charge", reason="back", ramp=False)
    assert not breakers.is_open("bank-charge", "0001")


def test_older_event_never_overwrites_newer(breakers: Breakers) -> None:
    breakers.open("bank-charge", "0001", reason="alert", version=T0_MS + 2000)
    stale = breakers.close("bank-charge", "0001", reason="late recovery", version=T0_MS + 1000)
    assert (stale.outcome, stale.applied, stale.version) == ("stale", False, T0_MS + 2000)
    assert breakers.is_open("bank-charge", "0001")
    assert breakers.state("bank-charge", "0001").reason == "alert"
    again = breakers.open("bank-charge", "0001", reason="retry", version=T0_MS + 2000)
    assert again.outcome == "unchanged"
    newer = breakers.close(
        "bank-charge", "0001", reason="recovery", version=T0_MS + 3000, ramp=False
    )
    assert newer.changed and not breakers.is_open("bank-charge", "0001")


def test_unversioned_write_applies_and_keeps_the_newest_version(breakers: Breakers) -> None:
    ahead = T0_MS + 3_600_000  # an event stamped by a clock an hour ahead
    breakers.open("bank-charge", reason="alert", version=ahead)
    result = breakers.close("bank-charge", reason="by hand", ramp=False)
    assert result.changed and result.version == ahead
    assert breakers.open("bank-charge", reason="older", version=ahead - 1).outcome == "stale"


def test_close_ramps_a_growing_share_over_the_window(
    make_breakers: MakeBreakers, clock: Clock
) -> None:
    rng = random.Random(7)
    writer = make_breakers(sync=False, ramp_window=60.0)
    # The reader's own window is ignored: the ramp travels with the record.
    reader = make_breakers(sync=False, ramp_window=5.0, rng=rng.random)
    writer.open("bank-charge", "0001", reason="alert", version=T0_MS)
    result = writer.close("bank-charge", "0001", reason="recovered", version=T0_MS + 1)
    assert result.new_state == "recovering"
    reader.refresh()

    def allowed_share() -> float:
        calls = 4000
        return sum(not reader.is_open("bank-charge", "0001") for _ in range(calls)) / calls

    shares = []
    for elapsed in (0.0, 30.0, 54.0):
        clock.now = T0 + elapsed
        shares.append(allowed_share())
        state = reader.state("bank-charge", "0001", local=True)
        assert state.state == "recovering"
        assert state.ramp_share == pytest.approx(0.1 + 0.9 * elapsed / 60)
    assert shares[0] == pytest.approx(0.1, abs=0.03)
    assert shares[1] == pytest.approx(0.55, abs=0.03)
    assert shares[2] == pytest.approx(0.91, abs=0.03)
    clock.now = T0 + 60.0
    assert allowed_share() == 1.0
    assert reader.state("bank-charge", "0001").state == "closed"
    assert writer.close("bank-charge", "0001", reason="again", version=T0_MS + 2).outcome == (
        "unchanged"
    )


def test_ramp_can_be_skipped(breakers: Breakers) -> None:
    breakers.open("bank-charge", "0001", reason="alert")
    assert breakers.close("bank-charge", "0001", reason="ok", ramp=False).new_state == "closed"
    assert not breakers.is_open("bank-charge", "0001")


def test_recovering_breaker_refuses_by_the_rng(make_breakers: MakeBreakers) -> None:
    draws = iter([0.05, 0.5])  # below the 10% start share: allowed; above: refused
    b = make_breakers(sync=False, rng=lambda: next(draws))
    b.refresh()
    b.open("bank-charge", "0001", reason="alert")
    b.close("bank-charge", "0001", reason="recovered")
    assert not b.is_open("bank-charge", "0001")
    assert b.is_open("bank-charge", "0001")


def test_forced_open_survives_monitor_writes_then_expires_to_the_latest_truth(
    make_breakers: MakeBreakers, clock: Clock
) -> None:
    writer = make_breakers(sync=False)
    reader = make_breakers(sync=False)
    forced = writer.force_open(
        "bank-charge", "0001", reason="vendor maintenance", by="ana", expires_in=300
    )
    assert forced.new_state == "forced_open"
    masked = writer.open("bank-charge", "0001", reason="alert", version=T0_MS)
    assert masked.changed and masked.forced and masked.new_state == "forced_open"
    reader.refresh()
    state = reader.state("bank-charge", "0001")
    assert (state.state, state.monitor_state, state.forced_by) == ("forced_open", "open", "ana")
    assert state.expires_at_ms == T0_MS + 300_000
    # The monitor recovers while the override holds: recorded, not yet seen by callers.
    masked = writer.close("bank-charge", "0001", reason="recovered", version=T0_MS + 10, ramp=False)
    assert masked.changed and masked.new_state == "forced_open"
    assert writer.open("bank-charge", "0001", reason="late", version=T0_MS + 5).outcome == "stale"
    reader.refresh()
    assert reader.is_open("bank-charge", "0001")
    assert reader.state("bank-charge", "0001", local=True).monitor_state == "closed"
    clock.advance(301)
    # No write happened: the expiry is read off the clock, in the snapshot and in Redis,
    # and the breaker shows the monitor's latest word (closed), not the override's.
    assert not reader.is_open("bank-charge", "0001")
    assert reader.state("bank-charge", "0001").state == "closed"
    writer.open("bank-charge", "0001", reason="alert again", version=T0_MS + 20)
    history = writer.history("bank-charge", "0001")
    assert [(h.action, h.old_state, h.new_state, h.monitor_state) for h in history] == [
        ("open", "closed", "open", "open"),
        ("override_expired", "forced_open", "closed", "closed"),
        ("stale_open", "forced_open", "forced_open", "closed"),  # the late alert, ignored
        ("close", "forced_open", "forced_open", "closed"),
        ("open", "forced_open", "forced_open", "open"),
        ("force_open", "closed", "forced_open", "closed"),
    ]
    assert history[1].time_ms == T0_MS + 300_000


def test_expiry_restores_an_open_monitor_state(breakers: Breakers, clock: Clock) -> None:
    breakers.open("bank-charge", reason="alert", version=T0_MS)
    breakers.force_close("bank-charge", reason="false alarm", by="bo", expires_in=60)
    assert not breakers.is_open("bank-charge", "0001")
    clock.advance(60)
    assert breakers.is_open("bank-charge", "0001")


def test_force_without_expiry_and_clear(breakers: Breakers) -> None:
    breakers.open("bank-charge", "0001", reason="alert")
    breakers.force_close("bank-charge", "0001", reason="known false alarm", by="bo")
    assert not breakers.is_open("bank-charge", "0001")
    state = breakers.state("bank-charge", "0001")
    assert (state.state, state.expires_at_ms, state.reason) == (
        "forced_closed",
        None,
        "known false alarm",
    )
    cleared = breakers.clear_override("bank-charge", "0001", reason="fixed", by="bo")
    assert (cleared.old_state, cleared.new_state) == ("forced_closed", "open")
    assert breakers.is_open("bank-charge", "0001")
    assert (
        breakers.clear_override("bank-charge", "0001", reason="again", by="bo").outcome
        == "unchanged"
    )


def test_history_records_every_change_and_is_capped(make_breakers: MakeBreakers) -> None:
    b = make_breakers(sync=False, history_max=5)
    b.open("bank-charge", "0001", reason="r1", version=T0_MS + 1, source="monitor:1 event:e1")
    b.open("bank-charge", "0001", reason="dup", version=T0_MS + 1)  # unchanged: not a change
    b.open("bank-charge", "0001", reason="old", version=T0_MS)  # stale: listed as ignored
    stale, *entries = b.history("bank-charge", "0001")
    assert (stale.action, stale.version, stale.newer_version) == ("stale_open", T0_MS, T0_MS + 1)
    assert len(entries) == 1
    first = entries[0]
    assert (first.name, first.key, first.action, first.old_state, first.new_state) == (
        "bank-charge",
        "0001",
        "open",
        "closed",
        "open",
    )
    assert (first.reason, first.source, first.version, first.time_ms) == (
        "r1",
        "monitor:1 event:e1",
        T0_MS + 1,
        T0_MS,
    )
    for i in range(2, 9):
        if i % 2:
            b.open("bank-charge", "0001", reason=f"r{i}", version=T0_MS + i)
        else:
            b.close("bank-charge", "0001", reason=f"r{i}", version=T0_MS + i, ramp=False)
    entries = b.history("bank-charge", "0001", limit=100)
    assert [e.reason for e in entries] == ["r8", "r7", "r6", "r5", "r4"]
    assert len(b.history("bank-charge", "0001", limit=2)) == 2
    forced = b.force_open("bank-charge", "0001", reason="m", by="ana", expires_in=10)
    assert forced.changed
    top = b.history("bank-charge", "0001")[0]
    assert (top.action, top.by, top.forced, top.expires_at_ms, top.source) == (
        "force_open",
        "ana",
        True,
        T0_MS + 10_000,
        "person:ana",
    )


def test_apply_snapshot_opens_alerts_and_closes_the_rest(breakers: Breakers) -> None:
    breakers.open("bank-charge", "0001", reason="a", version=T0_MS)
    breakers.open("bank-charge", "0002", reason="a", version=T0_MS)
    breakers.open("bank-charge", reason="whole vendor", version=T0_MS)
    breakers.open("other-vendor", "0002", reason="a", version=T0_MS)
    results = breakers.apply_snapshot(
        "bank-charge",
        {"0001": "Alert", "0003": "Warn", "0004": True},
        reason="reconcile",
        version=T0_MS + 5,
        source="reconciler",
        ramp=False,
    )
    got = {r.key: (r.outcome, r.new_state) for r in results}
    assert got == {
        "0001": ("unchanged", "open"),
        "0003": ("unchanged", "closed"),
        "0004": ("changed", "open"),
        "0002": ("changed", "closed"),  # not listed: closed
    }
    assert breakers.state("bank-charge").state == "open"  # keyless not listed: untouched
    assert breakers.state("other-vendor", "0002").state == "open"  # another breaker name
    warn_opens = breakers.apply_snapshot(
        "bank-charge", {"0003": "Warn"}, reason="r", version=T0_MS + 6, open_statuses={"Warn"}
    )
    assert {r.key: r.new_state for r in warn_opens}["0003"] == "open"


def test_apply_snapshot_obeys_versions_per_key(breakers: Breakers) -> None:
    breakers.open("bank-charge", "0001", reason="newer alert", version=T0_MS + 100)
    breakers.open("bank-charge", "0002", reason="older alert", version=T0_MS)
    results = breakers.apply_snapshot(
        "bank-charge", {"0001": "OK", "0002": "OK"}, reason="snap", version=T0_MS + 50, ramp=False
    )
    assert {r.key: r.outcome for r in results} == {"0001": "stale", "0002": "changed"}
    assert breakers.is_open("bank-charge", "0001")
    assert not breakers.is_open("bank-charge", "0002")


def test_apply_snapshot_is_one_atomic_step(
    breakers: Breakers, redis: redis_lib.Redis, key_prefix: str
) -> None:
    keys = BreakerKeys(key_prefix)
    codes = [f"{i:04d}" for i in range(60)]
    breakers.apply_snapshot("bank-charge", dict.fromkeys(codes, False), reason="init", ramp=False)
    mixed: list[set[str]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            pipe = redis.pipeline(transaction=True)  # MULTI/EXEC: one consistent read
            for code in codes:
                pipe.hget(keys.record(f"bank-charge:{code}"), "state")
            states = set(pipe.execute())
            if len(states) > 1:
                mixed.append(states)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for i in range(40):
            breakers.apply_snapshot(
                "bank-charge", dict.fromkeys(codes, i % 2 == 0), reason=f"flip {i}", ramp=False
            )
    finally:
        done.set()
        watcher.join(10)
    assert not mixed, f"a reader saw a half-applied snapshot: {mixed[:3]}"


def test_state_and_list(breakers: Breakers) -> None:
    assert breakers.state("bank-charge", "9999").state == "closed"  # never written
    breakers.open("bank-charge", "0002", reason="a")
    breakers.open("bank-charge", reason="b")
    breakers.force_close("acme", reason="c", by="ana")
    listed = [(s.name, s.key, s.state) for s in breakers.list()]
    assert listed == [
        ("acme", None, "forced_closed"),
        ("bank-charge", None, "open"),
        ("bank-charge", "0002", "open"),
    ]
    assert [(s.name, s.key) for s in breakers.list(local=True)] == [(n, k) for n, k, _ in listed]
    assert isinstance(breakers.list()[0], BreakerState)
    assert breakers.list()[1].to_dict()["reason"] == "b"


def test_written_state_and_read_state_agree(breakers: Breakers, clock: Clock) -> None:
    """The Lua rules and the Python rules must name every state the same way."""
    steps: list[Callable[[], Any]] = [
        lambda: breakers.open("v", "k", reason="a"),
        lambda: breakers.close("v", "k", reason="b"),
        lambda: clock.advance(30),
        lambda: breakers.force_open("v", "k", reason="c", by="p", expires_in=5),
        lambda: breakers.close("v", "k", reason="d", ramp=False),
        lambda: clock.advance(6),
        lambda: breakers.open("v", "k", reason="e"),
        lambda: breakers.force_close("v", "k", reason="f", by="p"),
        lambda: breakers.clear_override("v", "k", reason="g", by="p"),
        lambda: breakers.close("v", "k", reason="h"),
    ]
    for step in steps:
        result = step()
        if result is not None:
            assert result.new_state == breakers.state("v", "k").state
            assert result.new_state == breakers.state("v", "k", local=True).state


def test_guard_and_check_name_the_breaker(breakers: Breakers) -> None:
    with breakers.guard("bank-charge", "0001"):
        pass
    breakers.open("bank-charge", "0001", reason="5xx over 20%", version=T0_MS)
    with pytest.raises(BreakerOpen) as caught, breakers.guard("bank-charge", "0001"):
        pytest.fail("the guarded block must not run")
    error = caught.value
    assert (error.name, error.key, error.state, error.breaker_key) == (
        "bank-charge",
        "0001",
        "open",
        "0001",
    )
    assert error.since_ms == T0_MS
    assert str(error) == (
        "breaker bank-charge[0001] is open since 2023-11-14T22:13:20+00:00: 5xx over 20%"
    )
    breakers.force_open("bank-charge", reason="maintenance", by="ana", expires_in=60)
    match = (
        r"breaker bank-charge\[0002\] refused: the whole-vendor breaker bank-charge is forced_open"
    )
    with pytest.raises(BreakerOpen, match=match) as caught:
        breakers.check("bank-charge", "0002")
    assert caught.value.breaker_key is None and caught.value.state == "forced_open"
    assert "forced by ana until 2023-11-14T22:14:20+00:00: maintenance" in str(caught.value)


def test_apply_groups_orders_each_group_by_its_own_version(
    breakers: Breakers, redis: redis_lib.Redis, key_prefix: str
) -> None:
    a, b = "monitor:1 bank_code:0001", "monitor:1 bank_code:0002"
    opened = breakers.apply_groups(
        "acme", [GroupStatus(a, "Alert", T0_MS), GroupStatus(b, "Alert", T0_MS + 1)], reason="r"
    )
    assert (opened.outcome, opened.new_state) == ("changed", "open")
    # B recovers last, then A's older recovery arrives: each is newer than its own entry.
    assert breakers.apply_groups(
        "acme", [GroupStatus(b, "OK", T0_MS + 9)], reason="r"
    ).new_state == ("open")
    closed = breakers.apply_groups("acme", [GroupStatus(a, "OK", T0_MS + 5)], reason="r")
    assert (closed.outcome, closed.new_state, closed.version) == (
        "changed",
        "recovering",
        T0_MS + 9,
    )
    # A read older than A's entry asserts nothing; alone it is stale.
    late = breakers.apply_groups("acme", [GroupStatus(a, "Alert", T0_MS + 4)], reason="r")
    assert (late.outcome, late.new_state) == ("stale", "recovering")
    # A read as new as the entry does not overrule it; the group's own notification does.
    same = breakers.apply_groups("acme", [GroupStatus(a, "Alert", T0_MS + 5)], reason="r")
    assert same.outcome == "stale"
    again = breakers.apply_groups(
        "acme", [GroupStatus(a, "Alert", T0_MS + 5, notified=True)], reason="r"
    )
    assert again.new_state == "open"
    assert redis.hgetall(BreakerKeys(key_prefix).groups("acme")) == {
        a: f"{T0_MS + 5} Alert",
        b: f"{T0_MS + 9} OK",
    }


def test_apply_groups_takes_a_monitor_with_thousands_of_groups(breakers: Breakers) -> None:
    groups = [GroupStatus(f"monitor:1 host:h{i}", "OK", T0_MS) for i in range(5000)]
    groups.append(GroupStatus("monitor:1 host:down", "Alert", T0_MS))
    assert breakers.apply_groups("acme", groups, reason="r").new_state == "open"
    recovered = [GroupStatus("monitor:1 host:down", "OK", T0_MS + 1, notified=True)]
    assert breakers.apply_groups("acme", recovered, reason="r").new_state == "recovering"
