"""The Redis queue: idempotent enqueue, retries, reclaim, dead letters, replay (real Redis)."""

from __future__ import annotations

import redis as redis_lib

from router.keys import RouterKeys
from router.model import Notification
from router.queue import DeliveryQueue, delivery_id_for

URL_A = "http://127.0.0.1:9/a"
URL_B = "http://127.0.0.1:9/b"


def make_queue(
    client: redis_lib.Redis, prefix: str, clock: list[int] | None = None
) -> DeliveryQueue:
    ticks = clock if clock is not None else [1_000_000]
    return DeliveryQueue(client, RouterKeys(prefix), retention_s=60, clock=lambda: ticks[0])


def notification(*urls: str, dedup_key: str = "datadog:1:alert") -> Notification:
    return Notification(
        source="datadog",
        dedup_key=dedup_key,
        transition="alert",
        datadog_transition="Triggered",
        renotification=False,
        title="[Triggered] x",
        message="m",
        callback_urls=urls,
        received_at_ms=1,
        event_id="1",
        monitor_id="2",
    )


def test_enqueue_creates_one_delivery_per_url_and_ignores_a_repeat(redis, key_prefix):
    queue = make_queue(redis, key_prefix)
    first = queue.enqueue(notification(URL_A, URL_B))
    assert [(e.url, e.created) for e in first] == [(URL_A, True), (URL_B, True)]
    again = queue.enqueue(notification(URL_A, URL_B))
    assert [e.created for e in again] == [False, False]
    assert [e.delivery_id for e in again] == [e.delivery_id for e in first]
    assert redis.xlen(queue.keys.stream) == 2
    assert queue.stats() == {"accepted": 2, "duplicates": 2}


def test_delivery_ids_are_stable_and_distinct_per_url():
    assert delivery_id_for("k", URL_A) == delivery_id_for("k", URL_A)
    assert delivery_id_for("k", URL_A) != delivery_id_for("k", URL_B)
    assert delivery_id_for("k", URL_A).startswith("dlv_")
    assert "." not in delivery_id_for("k", URL_A)  # Standard Webhooks forbids '.' in ids


def test_read_then_retry_then_due_moves_back(redis, key_prefix):
    clock = [1_000_000]
    queue = make_queue(redis, key_prefix, clock)
    queue.ensure_group()
    [enqueued] = queue.enqueue(notification(URL_A))
    [claim] = queue.read("w1", count=10, block_ms=10)
    delivery = queue.load(claim.delivery_id)
    assert delivery is not None and delivery.status == "queued"
    delivery.attempts.append({"n": 1, "outcome": "retry"})
    queue.schedule_retry(claim, delivery, due_ms=clock[0] + 5000)
    assert queue.depths() == {"ready": 0, "in_flight": 0, "delayed": 1, "dead": 0}
    assert queue.move_due() == 0  # not due yet
    clock[0] += 5000
    assert queue.move_due() == 1
    [again] = queue.read("w1", count=10, block_ms=10)
    assert again.delivery_id == enqueued.delivery_id
    reloaded = queue.load(again.delivery_id)
    assert reloaded is not None and reloaded.status == "retrying"
    assert reloaded.attempts == [{"n": 1, "outcome": "retry"}]


def test_an_entry_held_by_a_dead_worker_is_reclaimed(redis, key_prefix):
    queue = make_queue(redis, key_prefix)
    queue.ensure_group()
    queue.enqueue(notification(URL_A))
    [held] = queue.read("dies", count=1, block_ms=10)
    assert queue.reclaim("survivor", min_idle_ms=60_000, count=10)[0] == []  # not idle enough
    [taken], _cursor = queue.reclaim("survivor", min_idle_ms=0, count=10)
    assert taken == held
    delivery = queue.load(taken.delivery_id)
    assert delivery is not None and delivery.reclaims == 1


def test_complete_sets_retention_and_clears_the_entry(redis, key_prefix):
    queue = make_queue(redis, key_prefix)
    queue.ensure_group()
    queue.enqueue(notification(URL_A))
    [claim] = queue.read("w", count=1, block_ms=10)
    delivery = queue.load(claim.delivery_id)
    assert delivery is not None
    queue.complete(claim, delivery)
    assert queue.load(claim.delivery_id).status == "delivered"  # type: ignore[union-attr]
    assert 0 < redis.pttl(queue.keys.delivery(claim.delivery_id)) <= 60_000
    assert queue.depths()["in_flight"] == 0
    assert redis.xlen(queue.keys.stream) == 0


def test_dead_letter_keeps_everything_then_replay_and_purge(redis, key_prefix):
    queue = make_queue(redis, key_prefix)
    queue.ensure_group()
    queue.enqueue(notification(URL_A))
    [claim] = queue.read("w", count=1, block_ms=10)
    delivery = queue.load(claim.delivery_id)
    assert delivery is not None
    delivery.attempts.append({"n": 1, "status": 400, "outcome": "permanent"})
    queue.dead_letter(claim, delivery, "permanent failure: HTTP 400")

    [letter] = queue.dead_letters()
    assert (letter.delivery_id, letter.url, letter.reason) == (
        claim.delivery_id,
        URL_A,
        "permanent failure: HTTP 400",
    )
    assert redis.ttl(queue.keys.delivery(claim.delivery_id)) == -1  # no TTL on dead letters
    dead = queue.load(claim.delivery_id)
    assert dead is not None and dead.status == "dead" and len(dead.attempts) == 1

    assert queue.replay(claim.delivery_id) is True
    assert queue.replay(claim.delivery_id) is False  # no longer dead
    assert queue.dead_count() == 0
    [replayed] = queue.read("w", count=1, block_ms=10)
    assert replayed.delivery_id == claim.delivery_id  # same id: the same webhook-id
    again = queue.load(claim.delivery_id)
    assert again is not None and again.replays == 1 and again.attempts_this_round == 0

    queue.dead_letter(replayed, again, "still failing")
    assert queue.purge([claim.delivery_id, "dlv_unknown"]) == 1
    assert queue.load(claim.delivery_id) is None
    assert queue.dead_count() == 0


def test_reclaim_walks_the_whole_pending_list_with_its_cursor(redis, key_prefix):
    queue = make_queue(redis, key_prefix)
    queue.ensure_group()
    for n in range(30):
        queue.enqueue(notification(URL_A, dedup_key=f"datadog:{n}:alert"))
    held = queue.read("dies", count=30, block_ms=10)
    seen: list[str] = []
    cursor = "0-0"
    for _ in range(30):
        claims, cursor = queue.reclaim("survivor", min_idle_ms=0, count=4, cursor=cursor)
        seen += [c.entry_id for c in claims]
        if cursor == "0-0":
            break
    assert sorted(seen) == sorted(c.entry_id for c in held)
