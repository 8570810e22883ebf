"""Pruning: breakers closed and unwritten for `idle_ttl` leave Redis and every snapshot."""

from __future__ import annotations

from typing import Any

import pytest
import redis as redis_lib
from breaker_client import Breakers

from router.keys import BreakerKeys
from tests import test_client_breakers
from tests.test_client_breakers import Clock, MakeBreakers
from tests.test_client_sync import wait_until

DAY_S = 24 * 3600.0
IDLE_TTL_S = 30 * DAY_S

# The fixtures of the breaker tests: a test clock, and handles stopped afterwards.
clock = test_client_breakers.clock
make_breakers = test_client_breakers.make_breakers


def handle(make_breakers: MakeBreakers, **options: Any) -> Breakers:
    """A handle that prunes after 30 days; write-only unless `sync=True`, loaded at once."""
    options.setdefault("idle_ttl", IDLE_TTL_S)
    options.setdefault("sync", False)
    breakers = make_breakers(**options)
    if not options["sync"]:
        breakers.refresh()
    return breakers


def keys_of(redis: redis_lib.Redis, keys: BreakerKeys, member: str) -> set[str]:
    """Every Redis key that names `member` (the shared index and sorted sets excluded)."""
    found = {str(k) for k in redis.scan_iter(match=f"{keys.prefix}:*{member}", count=1000)}
    return {k for k in found if k.endswith(f":{member}")}


def test_an_idle_closed_breaker_is_deleted_with_every_key_of_it(
    make_breakers: MakeBreakers, clock: Clock, redis: redis_lib.Redis, key_prefix: str
) -> None:
    b = handle(
        make_breakers,
    )
    keys = BreakerKeys(key_prefix)
    b.open("bank-charge", "0001", reason="alert")
    b.close("bank-charge", "0001", reason="recovered", ramp=False)
    b.open("bank-charge", reason="vendor alert")
    b.close("bank-charge", reason="vendor ok", ramp=False)
    # Whatever else a script keeps per breaker (here the keyless breaker's group entries).
    redis.hset(keys.groups("bank-charge"), "monitor:1 ", "1 OK")
    assert keys_of(redis, keys, "bank-charge:0001") and keys_of(redis, keys, "bank-charge")

    clock.advance(IDLE_TTL_S - 1)
    assert b.prune() == 0
    clock.advance(2)
    assert b.prune() == 2

    assert keys_of(redis, keys, "bank-charge:0001") == set()
    assert keys_of(redis, keys, "bank-charge") == set()
    assert redis.smembers(keys.index) == set()
    assert b.list() == [] and b.list(local=True) == []
    assert b.history("bank-charge", "0001") == []
    assert b.state("bank-charge", "0001").state == "closed"


def test_only_closed_breakers_without_an_override_in_force_are_pruned(
    make_breakers: MakeBreakers, clock: Clock
) -> None:
    b = handle(
        make_breakers,
    )
    b.open("vendor", "open", reason="still failing")
    b.force_close("vendor", "held", reason="person says ok", by="ana")
    b.force_open("vendor", "expired", reason="maintenance", by="ana", expires_in=3600)
    b.open("vendor", "ramped", reason="alert")
    b.close("vendor", "ramped", reason="recovered")  # ramps for the default 60 s
    b.open("vendor", "recent", reason="alert")
    clock.advance(IDLE_TTL_S - DAY_S)
    b.close("vendor", "recent", reason="recovered", ramp=False)
    clock.advance(2 * DAY_S)

    assert b.prune() == 2
    assert sorted(s.key or "" for s in b.list()) == ["held", "open", "recent"]
    assert b.is_open("vendor", "open")
    # Kept ones are looked at again one idle time later, not at every prune.
    b.close("vendor", "open", reason="recovered", ramp=False)
    clock.advance(IDLE_TTL_S + 1)
    assert b.prune() == 2  # "open", closed since, and "recent"; "held" stays
    assert [s.key for s in b.list()] == ["held"]


def test_a_snapshot_restamping_a_key_it_does_not_list_keeps_its_age(
    make_breakers: MakeBreakers, clock: Clock
) -> None:
    b = handle(
        make_breakers,
    )
    b.apply_snapshot("bank-charge", {"0001": "OK", "0002": "OK"}, reason="reconcile")
    clock.advance(20 * DAY_S)
    # 0002 is closed again at a newer version: nothing changed for it, nobody named it.
    now_ms = int(clock() * 1000)
    b.apply_snapshot("bank-charge", {"0001": "OK"}, reason="reconcile", version=now_ms)
    assert b.state("bank-charge", "0002").version == now_ms
    clock.advance(11 * DAY_S)
    assert b.prune() == 1
    assert [s.key for s in b.list()] == ["0001"]


def test_a_write_after_a_prune_is_seen_by_a_process_that_held_the_breaker(
    make_breakers: MakeBreakers, clock: Clock
) -> None:
    writer = handle(
        make_breakers,
    )
    reader = handle(make_breakers, sync=True, resync_interval=300)
    for version in range(1, 7):  # several revisions, each one broadcast, before the prune
        if version % 2:
            writer.open("bank-charge", "0001", reason="flapping", version=version)
        else:
            writer.close("bank-charge", "0001", reason="flapping", version=version, ramp=False)
    assert wait_until(lambda: reader.state("bank-charge", "0001", local=True).version == 6, 2.0)
    clock.advance(IDLE_TTL_S + 1)
    assert handle(make_breakers, idle_ttl=DAY_S).prune() == 1
    assert wait_until(lambda: reader.stats()["breakers"] == 0, 2.0)

    writer.open("bank-charge", "0001", reason="alert after the prune", version=7)
    assert writer.is_open("bank-charge", "0001")  # its own snapshot held revision 5
    assert wait_until(lambda: reader.is_open("bank-charge", "0001"), 2.0)


def test_a_record_deleted_and_written_again_is_not_taken_for_an_older_one(
    make_breakers: MakeBreakers, redis: redis_lib.Redis, key_prefix: str
) -> None:
    # What a prune by another process looks like to a process that missed its message.
    b = handle(
        make_breakers,
    )
    for version in range(1, 6):
        b.close("bank-charge", "0001", reason="ok", version=version, ramp=False)
    redis.delete(*BreakerKeys(key_prefix).member_keys("bank-charge:0001"))
    b.open("bank-charge", "0001", reason="alert", version=6)
    assert b.is_open("bank-charge", "0001")


def test_the_sync_thread_prunes_and_its_snapshot_shrinks(
    make_breakers: MakeBreakers, clock: Clock, redis: redis_lib.Redis, key_prefix: str
) -> None:
    writer = handle(
        make_breakers,
    )
    for code in range(20):
        writer.close("bank-charge", f"{code:04d}", reason="seen once", ramp=False, version=1)
    writer.open("bank-charge", "0099", reason="open for good")
    reader = handle(make_breakers, sync=True, resync_interval=0.05)
    assert reader.stats()["breakers"] == 21
    clock.advance(IDLE_TTL_S + 1)
    assert wait_until(lambda: reader.stats()["breakers"] == 1, 5.0)
    assert reader.stats()["pruned"] == 20
    assert redis.smembers(BreakerKeys(key_prefix).index) == {"bank-charge:0099"}
    assert reader.is_open("bank-charge", "0099")


def test_idle_ttl_none_never_prunes_and_nonsense_is_refused(
    make_breakers: MakeBreakers, clock: Clock
) -> None:
    b = handle(make_breakers, idle_ttl=None)
    b.close("bank-charge", "0001", reason="ok")
    clock.advance(10 * IDLE_TTL_S)
    assert b.prune() == 0 and len(b.list()) == 1
    with pytest.raises(ValueError, match="idle_ttl"):
        handle(make_breakers, idle_ttl=0)
