"""The Redis queue: idempotent enqueue, retries, reclaim, dead letters, replay (real Redis)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis as redis_lib

from router.keys import RouterKeys
from router.model import Notification
from router.queue import Claim, Counted, Delivery, DeliveryQueue, delivery_id_for

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


def one_claimed(queue: DeliveryQueue) -> tuple[Claim, Delivery]:
    """One delivery, enqueued and claimed by worker `w`."""
    queue.ensure_group()
    queue.enqueue(notification(URL_A))
    [claim] = queue.read("w", count=1, block_ms=10)
    delivery = queue.load(claim.delivery_id)
    assert delivery is not None
    return claim, delivery


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
    queue.schedule_retry(
        claim, delivery, due_ms=clock[0] + 5000, attempt={"n": 1, "outcome": "retry"}
    )
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
    assert (taken.entry_id, taken.delivery_id) == (held.entry_id, held.delivery_id)
    assert taken.consumer == "survivor"
    delivery = queue.load(taken.delivery_id)
    assert delivery is not None and delivery.reclaims == 1


def test_complete_sets_retention_and_clears_the_entry(redis, key_prefix):
    queue = make_queue(redis, key_prefix)
    claim, delivery = one_claimed(queue)
    queue.complete(claim, delivery)
    assert queue.load(claim.delivery_id).status == "delivered"  # type: ignore[union-attr]
    assert 0 < redis.pttl(queue.keys.delivery(claim.delivery_id)) <= 60_000
    assert queue.depths()["in_flight"] == 0
    assert redis.xlen(queue.keys.stream) == 0


def test_dead_letter_keeps_everything_then_replay_and_purge(redis, key_prefix):
    queue = make_queue(redis, key_prefix)
    claim, delivery = one_claimed(queue)
    queue.dead_letter(
        claim,
        delivery,
        "permanent failure: HTTP 400",
        attempt={"n": 1, "status": 400, "outcome": "permanent"},
    )

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


# -- failure paths: two workers on one delivery, records that vanished, purge racing replay --


def two_holders(queue: DeliveryQueue):
    """The same entry held first by a slow worker, then by one that took it over."""
    queue.ensure_group()
    queue.enqueue(notification(URL_A))
    [slow] = queue.read("slow", count=1, block_ms=10)
    [taker], _cursor = queue.reclaim("taker", min_idle_ms=0, count=1)
    slow_copy, taker_copy = queue.load(slow.delivery_id), queue.load(taker.delivery_id)
    assert slow_copy is not None and taker_copy is not None
    return (slow, slow_copy), (taker, taker_copy)


def test_a_late_completion_cannot_undo_a_dead_letter(redis, key_prefix):
    queue = make_queue(redis, key_prefix)
    (slow, slow_copy), (taker, taker_copy) = two_holders(queue)
    queue.dead_letter(taker, taker_copy, "permanent failure: HTTP 400")
    queue.complete(slow, slow_copy)  # the slow worker's answer arrives after all
    dead = queue.load(slow.delivery_id)
    assert dead is not None and dead.status == "dead"
    assert [d.delivery_id for d in queue.dead_letters()] == [slow.delivery_id]
    assert queue.replay(slow.delivery_id) is True  # the dead letter is still replayable


def test_a_late_dead_letter_cannot_undo_a_completion(redis, key_prefix):
    queue = make_queue(redis, key_prefix)
    (slow, slow_copy), (taker, taker_copy) = two_holders(queue)
    queue.complete(taker, taker_copy)
    queue.dead_letter(slow, slow_copy, "gave up after 7 attempts")
    delivered = queue.load(slow.delivery_id)
    assert delivered is not None and delivered.status == "delivered"
    assert queue.dead_count() == 0  # nothing a replay could send twice


def test_a_late_retry_schedules_nothing(redis, key_prefix):
    queue = make_queue(redis, key_prefix)
    (slow, slow_copy), (taker, taker_copy) = two_holders(queue)
    queue.complete(taker, taker_copy)
    queue.schedule_retry(slow, slow_copy, due_ms=1)
    delivered = queue.load(slow.delivery_id)
    assert delivered is not None and delivered.status == "delivered"
    assert queue.depths()["delayed"] == 0
    assert queue.move_due() == 0


def test_a_late_result_is_kept_in_the_history_and_changes_nothing_else(redis, key_prefix):
    queue = make_queue(redis, key_prefix)
    (slow, slow_copy), (taker, taker_copy) = two_holders(queue)
    queue.complete(taker, taker_copy, attempt={"n": 1, "outcome": "delivered", "status": 200})
    assert queue.complete(slow, slow_copy, attempt={"n": 1, "outcome": "retry"}) == "late"
    final = queue.load(slow.delivery_id)
    assert final is not None and final.status == "delivered"
    assert [(a["outcome"], a.get("late", False)) for a in final.attempts] == [
        ("delivered", False),
        ("retry", True),
    ]
    assert queue.stats()["late_results"] == 1


@pytest.mark.parametrize("write", ["complete", "schedule_retry", "dead_letter", "defer"])
def test_a_write_after_the_record_is_gone_leaves_no_half_record(redis, key_prefix, write):
    queue = make_queue(redis, key_prefix)
    claim, delivery = one_claimed(queue)
    redis.delete(queue.keys.delivery(claim.delivery_id))  # purged, or Redis lost its data
    {
        "complete": lambda: queue.complete(claim, delivery),
        "schedule_retry": lambda: queue.schedule_retry(claim, delivery, due_ms=1),
        "dead_letter": lambda: queue.dead_letter(claim, delivery, "gave up"),
        "defer": lambda: queue.defer(claim, claim.delivery_id, 0),
    }[write]()
    assert not redis.exists(queue.keys.delivery(claim.delivery_id))
    assert queue.depths() == {"ready": 0, "in_flight": 0, "delayed": 0, "dead": 0}
    assert queue.stats()["missing_records"] == 1


def test_reclaiming_an_entry_whose_record_is_gone_creates_nothing(redis, key_prefix):
    queue = make_queue(redis, key_prefix)
    queue.ensure_group()
    queue.enqueue(notification(URL_A))
    [held] = queue.read("dies", count=1, block_ms=10)
    redis.delete(queue.keys.delivery(held.delivery_id))
    [taken], _cursor = queue.reclaim("survivor", min_idle_ms=0, count=10)
    assert not redis.exists(queue.keys.delivery(taken.delivery_id))
    assert queue.load(taken.delivery_id) is None


def test_a_half_record_left_by_an_older_version_reads_as_missing(redis, key_prefix):
    queue = make_queue(redis, key_prefix)
    redis.hset(queue.keys.delivery("dlv_half"), mapping={"reclaims": "3"})
    assert queue.load("dlv_half") is None


def test_replay_gives_a_fresh_round_and_keeps_the_history(redis, key_prefix):
    queue = make_queue(redis, key_prefix)
    queue.ensure_group()
    queue.enqueue(notification(URL_A))
    [claim] = queue.read("w0", count=1, block_ms=10)
    for n in range(1, 7):  # six workers died holding it: poison
        [claim], _cursor = queue.reclaim(f"w{n}", min_idle_ms=0, count=1)
    delivery = queue.load(claim.delivery_id)
    assert delivery is not None and delivery.reclaims == 6
    queue.dead_letter(claim, delivery, "a worker stopped 6 times", attempt={"n": 1})
    assert queue.replay(claim.delivery_id)
    replayed = queue.load(claim.delivery_id)
    assert replayed is not None
    assert (replayed.id, replayed.status, replayed.replays) == (claim.delivery_id, "queued", 1)
    assert replayed.reclaims == 0 and replayed.attempts_this_round == 0
    assert replayed.attempts == [{"n": 1}]


class ReplayBetweenCommands(redis_lib.Redis):
    """A client on which a person's replay lands just before the Nth command it sends."""

    def __init__(self, url: str, replay: Callable[[], object], before: int) -> None:
        super().__init__(
            connection_pool=redis_lib.ConnectionPool.from_url(url, decode_responses=True)
        )
        self.replay, self.before, self.sent = replay, before, 0

    def execute_command(self, *args, **options):
        self.sent += 1
        if self.sent == self.before:
            self.replay()
        return super().execute_command(*args, **options)


@pytest.mark.parametrize("before", [1, 2, 3])
def test_purge_racing_a_replay_never_loses_the_replayed_delivery(
    redis, redis_url, key_prefix, before
):
    queue = make_queue(redis, key_prefix)
    claim, delivery = one_claimed(queue)
    queue.dead_letter(claim, delivery, "gave up")

    racing = ReplayBetweenCommands(redis_url, lambda: queue.replay(claim.delivery_id), before)
    try:
        make_queue(racing, key_prefix).purge([claim.delivery_id])
    finally:
        racing.close()
    record = queue.load(claim.delivery_id)
    if record is None:  # the purge won: nothing of it is left anywhere
        assert queue.depths() == {"ready": 0, "in_flight": 0, "delayed": 0, "dead": 0}
    else:  # the replay won: it is queued, and a worker will send it
        assert record.status == "queued"
        [again] = queue.read("w", count=1, block_ms=10)
        assert again.delivery_id == claim.delivery_id


def test_refresh_keeps_a_claim_only_while_it_is_ours(redis, key_prefix):
    queue = make_queue(redis, key_prefix)
    (slow, _slow_copy), (taker, _taker_copy) = two_holders(queue)
    assert queue.refresh(slow) is False  # taken over: the slow worker must not send
    assert queue.refresh(taker) is True
    [pending] = redis.xpending_range(queue.keys.stream, queue.keys.group, "-", "+", 10)
    assert pending["consumer"] == "taker"


def test_enqueue_many_stores_a_batch_in_one_script_call_and_counts_each(redis, key_prefix):
    queue = make_queue(redis, key_prefix)
    queue.enqueue(notification(URL_A, dedup_key="old"))
    script = queue._enqueue
    calls: list[int] = []
    queue._enqueue = lambda **kwargs: calls.append(1) or script(**kwargs)  # type: ignore[method-assign]
    counted = [Counted("datadog|queued|", "datadog|duplicate|")] * 4
    results = queue.enqueue_many(
        [
            notification(URL_A, URL_B, dedup_key="new"),
            notification(URL_A, dedup_key="old"),  # a sender's retry
            notification(dedup_key="no callback line"),
            notification(URL_B, dedup_key="also new"),
        ],
        counted=counted,
    )
    assert len(calls) == 1
    assert [[r.created for r in found] for found in results] == [[True, True], [False], [], [True]]
    assert [r.delivery_id for r in results[0]] == [
        delivery_id_for("new", URL_A),
        delivery_id_for("new", URL_B),
    ]
    for found in (*results[0], *results[3]):
        assert queue.load(found.delivery_id) is not None
    assert redis.xlen(RouterKeys(key_prefix).stream) == 4
    # Counted in the same call: two notifications queued, one duplicate, none for no line.
    assert redis.hgetall(RouterKeys(key_prefix).notifications_received) == {
        "datadog|queued|": "2",
        "datadog|duplicate|": "1",
    }


def test_enqueue_many_needs_one_count_per_notification(redis, key_prefix):
    with pytest.raises(ValueError, match="one entry per notification"):
        make_queue(redis, key_prefix).enqueue_many(
            [notification(URL_A)], counted=[Counted("a", "b")] * 2
        )
