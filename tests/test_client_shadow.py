"""Shadow breakers: they follow their monitor, let every call through and count the refusals."""

from __future__ import annotations

import os
import time
from typing import Any

import breaker_client.store
import pytest
import redis as redis_lib
from breaker_client import BreakerOpen, Breakers, CallbackEndpoint, apply_callback

from router.keys import BreakerKeys
from tests import test_client_breakers
from tests.client_support import SECRET, signed
from tests.test_client_breakers import T0_MS, Clock, MakeBreakers
from tests.test_client_sync import RedisServer, own_redis, wait_until

# The fixtures of the breaker tests: a test clock, and handles stopped afterwards.
clock = test_client_breakers.clock
make_breakers = test_client_breakers.make_breakers
_ = own_redis
MINUTE_MS = 60_000
DAY_S = 24 * 3600.0


def writer(make_breakers: MakeBreakers, **options: Any) -> Breakers:
    b = make_breakers(sync=False, **options)
    b.refresh()
    return b


def test_a_shadow_breaker_opened_by_a_callback_lets_calls_through_and_counts_them(
    make_breakers: MakeBreakers,
) -> None:
    b = writer(make_breakers)
    b.set_shadow("bank-charge", "0001", on=True, by="alice", reason="tuning the 5xx monitor")
    endpoint = CallbackEndpoint(
        b, SECRET, lambda event: apply_callback(b, event, "bank-charge", tag="bank_code")
    )
    body, headers = signed()
    assert endpoint(headers, body).status == 200

    state = b.state("bank-charge", "0001")
    assert (state.state, state.shadow, state.shadow_by) == ("open", True, "alice")
    assert [b.is_open("bank-charge", "0001") for _ in range(3)] == [False] * 3
    b.check("bank-charge", "0001")  # guard() and check() let it through too, and count it
    with b.guard("bank-charge", "0001"):
        pass
    assert not b.is_open("bank-charge", "0002")  # closed: nothing it would have refused
    assert b.stats()["shadow_refusals"] == 5

    assert b.shadow_counts([("bank-charge", "0001"), ("bank-charge", "0002")]) == {}
    assert b.flush_shadow() == 5
    assert b.shadow_counts([("bank-charge", "0001"), ("bank-charge", "0002")]) == {
        ("bank-charge", "0001"): 5
    }
    assert b.shadow_timeline("bank-charge", "0001") == {T0_MS - T0_MS % MINUTE_MS: 5}

    # Out of shadow mode the same breaker refuses, and stops counting.
    b.set_shadow("bank-charge", "0001", on=False, by="alice")
    assert b.is_open("bank-charge", "0001")
    with pytest.raises(BreakerOpen, match=r"bank-charge\[0001\] is open"):
        b.check("bank-charge", "0001")
    assert b.flush_shadow() == 0
    actions = [e.action for e in b.history("bank-charge", "0001")]
    assert actions[:3] == ["shadow_off", "open", "shadow_on"]


def test_shadow_on_the_keyless_breaker_covers_every_key_of_the_name(
    make_breakers: MakeBreakers, clock: Clock
) -> None:
    b = writer(make_breakers)
    b.set_shadow("bank-charge", on=True, by="alice")
    assert not b.is_open("bank-charge") and not b.is_open("bank-charge", "0003")
    b.open("bank-charge", "0001", reason="alert")
    b.open("bank-charge", "0002", reason="alert")
    assert not b.is_open("bank-charge", "0001") and not b.is_open("bank-charge", "0002")
    clock.advance(60)
    b.open("bank-charge", reason="whole vendor down")
    assert not b.is_open("bank-charge", "0001")  # would be refused by the key and the vendor
    assert not b.is_open("bank-charge")
    assert not b.is_open("fx-quotes")
    b.flush_shadow()
    assert b.shadow_counts(
        [("bank-charge", None), ("bank-charge", "0001"), ("bank-charge", "0002")]
    ) == {("bank-charge", "0001"): 2, ("bank-charge", "0002"): 1, ("bank-charge", None): 2}
    minute = T0_MS - T0_MS % MINUTE_MS
    assert b.shadow_timeline("bank-charge", "0001") == {minute: 1, minute + MINUTE_MS: 1}


def test_a_person_forcing_a_shadow_breaker_open_is_obeyed(make_breakers: MakeBreakers) -> None:
    b = writer(make_breakers)
    b.set_shadow("bank-charge", on=True, by="alice")
    b.set_shadow("bank-charge", "0001", on=True, by="alice")
    b.force_open("bank-charge", "0001", reason="bank maintenance", by="bob")
    assert b.is_open("bank-charge", "0001")
    with pytest.raises(BreakerOpen, match="forced by bob"):
        b.check("bank-charge", "0001")
    b.clear_override("bank-charge", "0001", reason="done", by="bob")
    assert not b.is_open("bank-charge", "0001")
    assert b.flush_shadow() == 0


def test_a_shadow_breaker_counts_the_calls_its_ramp_would_refuse(
    make_breakers: MakeBreakers, clock: Clock
) -> None:
    draws = iter([0.99, 0.05, 0.99])  # the ramp lets 10 % through at first: 0.99 is refused
    b = writer(make_breakers, rng=lambda: next(draws), ramp_window=60.0)
    b.set_shadow("bank-charge", "0001", on=True, by="alice")
    b.open("bank-charge", "0001", reason="alert")
    b.close("bank-charge", "0001", reason="recovered")
    assert b.state("bank-charge", "0001").state == "recovering"
    assert [b.is_open("bank-charge", "0001") for _ in range(2)] == [False, False]
    assert b.stats()["shadow_refusals"] == 1
    b.set_shadow("bank-charge", "0001", on=False, by="alice")
    assert b.is_open("bank-charge", "0001")  # the same draw refuses outside shadow mode


def test_every_process_sees_shadow_mode_and_its_thread_writes_the_counts(
    redis_url: str, key_prefix: str, make_breakers: MakeBreakers
) -> None:
    b = writer(make_breakers)
    reader = Breakers.from_url(redis_url, prefix=key_prefix, shadow_flush_interval=0.1)
    try:
        assert reader.wait_ready(5.0)
        b.open("bank-charge", "0001", reason="alert")
        assert wait_until(lambda: reader.is_open("bank-charge", "0001"), 5.0)
        b.set_shadow("bank-charge", "0001", on=True, by="alice")
        assert wait_until(lambda: not reader.is_open("bank-charge", "0001"), 5.0)
        assert wait_until(
            lambda: b.shadow_counts([("bank-charge", "0001")]).get(("bank-charge", "0001"), 0) >= 1,
            5.0,
        ), "the reader's thread did not write its counts"
    finally:
        reader.stop()


def test_counts_are_kept_while_redis_is_down_and_written_when_it_is_back(
    own_redis: RedisServer, key_prefix: str
) -> None:
    b = Breakers.from_url(own_redis.url, prefix=key_prefix, sync=False)
    b.refresh()
    try:
        redis_outage(b, own_redis)
    finally:
        b.stop()


def redis_outage(b: Breakers, own_redis: RedisServer) -> None:
    b.set_shadow("bank-charge", "0001", on=True, by="alice")
    b.open("bank-charge", "0001", reason="alert")
    assert not b.is_open("bank-charge", "0001")
    own_redis.kill()
    assert not b.is_open("bank-charge", "0001")
    with pytest.raises(Exception, match="breaker store unavailable"):
        b.flush_shadow()
    assert b.stats()["shadow_unflushed"] == 2
    own_redis.start()  # empty: the breaker is written again, then the counts reach it
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            b.set_shadow("bank-charge", "0001", on=True, by="alice")
            break
        except Exception:
            time.sleep(0.05)
    assert b.flush_shadow() == 2
    assert b.shadow_counts([("bank-charge", "0001")]) == {("bank-charge", "0001"): 2}


def test_a_shadow_breaker_is_never_pruned_and_its_counts_go_with_it(
    make_breakers: MakeBreakers, clock: Clock, redis: redis_lib.Redis, key_prefix: str
) -> None:
    b = writer(make_breakers, idle_ttl=30 * DAY_S)
    keys = BreakerKeys(key_prefix)
    b.set_shadow("bank-charge", "0001", on=True, by="alice")
    b.open("bank-charge", "0001", reason="alert")
    assert not b.is_open("bank-charge", "0001")
    b.flush_shadow()
    b.close("bank-charge", "0001", reason="recovered", ramp=False)
    clock.advance(31 * DAY_S)
    assert b.prune() == 0  # closed and idle, but a person's setting must not vanish
    assert b.state("bank-charge", "0001").shadow
    b.set_shadow("bank-charge", "0001", on=False, by="alice")
    clock.advance(31 * DAY_S)
    assert b.prune() == 1
    assert not redis.exists(keys.shadow("bank-charge:0001"))


def test_shadow_mode_needs_a_person(make_breakers: MakeBreakers) -> None:
    b = writer(make_breakers)
    with pytest.raises(ValueError, match="needs `by`"):
        b.set_shadow("bank-charge", on=True, by="")
    with pytest.raises(ValueError, match="breaker name"):
        b.set_shadow("bank:charge", on=True, by="alice")


def test_a_forked_child_counts_its_own_calls_only(make_breakers: MakeBreakers) -> None:
    """Counts the parent held at fork time are the parent's to write: never written twice."""
    b = writer(make_breakers)
    b.set_shadow("bank-charge", "0001", on=True, by="alice")
    b.open("bank-charge", "0001", reason="alert")
    assert calls_let_through(b, 2) == 2
    pid = os.fork()
    if pid == 0:  # the child: count one call, write, never return into pytest
        code = 1
        try:
            code = 0 if calls_let_through(b, 1) == 1 and b.flush_shadow() == 1 else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert b.shadow_counts([("bank-charge", "0001")]) == {("bank-charge", "0001"): 1}
    assert b.flush_shadow() == 2
    assert b.shadow_counts([("bank-charge", "0001")]) == {("bank-charge", "0001"): 3}


def calls_let_through(b: Breakers, n: int) -> int:
    return sum(not b.is_open("bank-charge", "0001") for _ in range(n))


def test_a_breaker_keeps_only_its_newest_minutes_of_counts(
    make_breakers: MakeBreakers, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(breaker_client.store, "MAX_SHADOW_BUCKETS", 5)
    b = writer(make_breakers)
    b.set_shadow("bank-charge", "0001", on=True, by="alice")
    b.open("bank-charge", "0001", reason="alert")
    minutes = []
    # One call and one flush a minute: when the hash passes the limit plus a slack of 100
    # fields (`total` is one), it keeps the newest `MAX_SHADOW_BUCKETS` minutes.
    for _ in range(105):
        assert not b.is_open("bank-charge", "0001")
        b.flush_shadow()
        minutes.append(int(clock.now * 1000) - int(clock.now * 1000) % MINUTE_MS)
        clock.advance(60)
    assert sorted(b.shadow_timeline("bank-charge", "0001")) == minutes[-5:]
    assert b.shadow_counts([("bank-charge", "0001")]) == {("bank-charge", "0001"): 105}
