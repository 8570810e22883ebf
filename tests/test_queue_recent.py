"""The index of recent deliveries the dashboard lists: newest change first, capped, never stale."""

from __future__ import annotations

from router.queue import RECENT_DELIVERIES_MAX
from tests.test_queue import URL_A, URL_B, make_queue, notification


def test_recent_lists_deliveries_by_their_latest_change(redis, key_prefix):
    clock = [1_000_000]
    queue = make_queue(redis, key_prefix, clock)
    queue.ensure_group()
    first, second = queue.enqueue(notification(URL_A, URL_B))
    assert {d.id for d in queue.recent(10)} == {first.delivery_id, second.delivery_id}
    [claim_a, _claim_b] = queue.read("w", count=2, block_ms=10)
    clock[0] += 5000
    delivered = queue.load(claim_a.delivery_id)
    assert delivered is not None
    queue.complete(claim_a, delivered, attempt={"n": 1, "outcome": "delivered"})
    recent = queue.recent(10)
    assert recent[0].id == claim_a.delivery_id
    assert recent[0].status == "delivered"
    assert len(recent) == 2


def test_a_dead_then_replayed_delivery_moves_up_and_a_purged_one_leaves(redis, key_prefix):
    clock = [1_000_000]
    queue = make_queue(redis, key_prefix, clock)
    queue.ensure_group()
    queue.enqueue(notification(URL_A, dedup_key="a"))
    queue.enqueue(notification(URL_B, dedup_key="b"))
    claims = queue.read("w", count=2, block_ms=10)
    dead_claim = claims[0]
    clock[0] += 1000
    dead = queue.load(dead_claim.delivery_id)
    assert dead is not None
    queue.dead_letter(dead_claim, dead, "permanent failure: 410")
    assert queue.recent(1)[0].id == dead.id
    other = claims[1]
    clock[0] += 1000
    other_delivery = queue.load(other.delivery_id)
    assert other_delivery is not None
    queue.complete(other, other_delivery)
    assert queue.recent(1)[0].id == other.delivery_id
    clock[0] += 1000
    assert queue.replay(dead.id)
    assert queue.recent(1)[0].id == dead.id
    [again] = queue.read("w", count=1, block_ms=10)
    replayed = queue.load(again.delivery_id)
    assert replayed is not None
    queue.dead_letter(again, replayed, "permanent failure: 410")
    assert queue.purge([dead.id]) == 1
    assert [d.id for d in queue.recent(10)] == [other.delivery_id]
    assert redis.zcard(queue.keys.recent_deliveries) == 1


def test_a_record_that_expired_is_skipped_and_dropped_from_the_index(redis, key_prefix):
    queue = make_queue(redis, key_prefix)
    [gone, kept] = queue.enqueue(notification(URL_A, URL_B))
    redis.delete(queue.keys.delivery(gone.delivery_id))  # what retention's PEXPIRE does
    assert [d.id for d in queue.recent(10)] == [kept.delivery_id]
    assert redis.zscore(queue.keys.recent_deliveries, gone.delivery_id) is None


def test_the_index_is_capped(redis, key_prefix):
    queue = make_queue(redis, key_prefix)
    urls = [f"http://127.0.0.1:9/cb/{n}" for n in range(RECENT_DELIVERIES_MAX + 5)]
    queue.enqueue(notification(*urls))
    assert redis.zcard(queue.keys.recent_deliveries) == RECENT_DELIVERIES_MAX
