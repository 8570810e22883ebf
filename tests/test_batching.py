"""Group commit: concurrent callers share one store call, each gets its own result or error."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import pytest

from router.batching import Batcher, BatchWaitTimeout

WAIT_S = 5.0


def run_concurrently(count: int, call: Callable[[int], object]) -> list[object]:
    """`call(i)` from `count` threads; each outcome (result or exception) at its index."""
    outcomes: list[object] = [None] * count

    def one(index: int) -> None:
        try:
            outcomes[index] = call(index)
        except Exception as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=WAIT_S * 2)
        assert not thread.is_alive(), "a submit did not return"
    return outcomes


class HeldStore:
    """A store whose first call waits until `release` is set: the others pile up meanwhile."""

    def __init__(self, fail_first: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail_first = fail_first

    def __call__(self, items: Sequence[int]) -> list[str]:
        self.batches.append(list(items))
        if len(self.batches) == 1:
            self.entered.set()
            assert self.release.wait(WAIT_S)
            if self.fail_first:
                raise ConnectionError("Redis went away")
        return [f"stored {item}" for item in items]


def submit_while_first_is_held(store: HeldStore, others: int) -> list[object]:
    batcher: Batcher[int, str] = Batcher(store, wait_s=WAIT_S)
    first: list[object] = []
    leader = threading.Thread(target=lambda: first.extend(run_concurrently(1, batcher.submit)))
    leader.start()
    assert store.entered.wait(WAIT_S)

    def release_when_all_wait() -> None:
        deadline = time.monotonic() + WAIT_S
        while len(batcher._waiting) < others and time.monotonic() < deadline:
            time.sleep(0.001)
        store.release.set()

    releaser = threading.Thread(target=release_when_all_wait)
    releaser.start()
    rest = run_concurrently(others, lambda i: batcher.submit(100 + i))
    leader.join(WAIT_S)
    releaser.join(WAIT_S)
    return first + rest


def test_requests_that_arrive_during_a_call_share_the_next_one():
    store = HeldStore()
    outcomes = submit_while_first_is_held(store, others=12)
    # One call for the first request, one for the twelve that waited: not thirteen calls.
    assert [len(batch) for batch in store.batches] == [1, 12]
    assert outcomes == ["stored 0"] + [f"stored {100 + i}" for i in range(12)]


def test_a_failed_call_fails_every_request_in_it_and_the_next_call_still_runs():
    store = HeldStore(fail_first=True)
    outcomes = submit_while_first_is_held(store, others=5)
    assert isinstance(outcomes[0], ConnectionError)  # told it failed: its sender retries
    assert outcomes[1:] == [f"stored {100 + i}" for i in range(5)]
    assert [len(batch) for batch in store.batches] == [1, 5]


def test_every_request_of_a_failed_batch_hears_of_the_failure():
    def failing(items: Sequence[int]) -> list[str]:
        raise ConnectionError("Redis went away")

    batcher: Batcher[int, str] = Batcher(failing, wait_s=WAIT_S)
    outcomes = run_concurrently(20, batcher.submit)
    assert all(isinstance(outcome, ConnectionError) for outcome in outcomes)


def test_a_store_answering_for_the_wrong_number_of_items_fails_the_batch():
    batcher: Batcher[int, str] = Batcher(lambda items: ["only one"] * 0, wait_s=WAIT_S)
    with pytest.raises(RuntimeError, match="0 results for a batch of 1"):
        batcher.submit(1)


def test_a_request_waits_for_a_stuck_batch_only_so_long():
    store = HeldStore()
    batcher: Batcher[int, str] = Batcher(store, wait_s=0.2)
    leader = threading.Thread(target=lambda: batcher.submit(0))
    leader.start()
    assert store.entered.wait(WAIT_S)
    started = time.monotonic()
    with pytest.raises(BatchWaitTimeout, match="not stored within"):
        batcher.submit(1)
    assert time.monotonic() - started < 2.0
    store.release.set()
    leader.join(WAIT_S)
    # Withdrawn while it waited: never stored behind its sender's back (which got a 503)...
    assert store.batches == [[0]]
    # ...and the next request is stored, not stuck behind a leader that is gone.
    assert batcher.submit(2) == "stored 2"
    assert store.batches == [[0], [2]]


def test_alone_a_request_is_stored_at_once_in_a_batch_of_one():
    calls: list[list[int]] = []

    def store(items: Sequence[int]) -> list[int]:
        calls.append(list(items))
        return [item * 2 for item in items]

    batcher: Batcher[int, int] = Batcher(store, wait_s=WAIT_S)
    assert [batcher.submit(n) for n in range(3)] == [0, 2, 4]
    assert calls == [[0], [1], [2]]


def test_under_load_a_leader_waits_briefly_for_the_requests_still_on_their_way():
    store = HeldStore()
    batcher: Batcher[int, str] = Batcher(store, wait_s=WAIT_S, linger_s=1.0)
    # A first call of one, then two that piled up behind it: the last call held two.
    leader = threading.Thread(target=lambda: batcher.submit(0))
    leader.start()
    assert store.entered.wait(WAIT_S)
    piled = [threading.Thread(target=batcher.submit, args=(n,)) for n in (1, 2)]
    for thread in piled:
        thread.start()
    wait_for_waiting(batcher, 2)
    store.release.set()
    for thread in [leader, *piled]:
        thread.join(WAIT_S)
    # Now one request, and another 50 ms later: the leader waits for it, one call for both.
    late = threading.Thread(target=lambda: (time.sleep(0.05), batcher.submit(4)))
    late.start()
    assert batcher.submit(3) == "stored 3"
    late.join(WAIT_S)
    assert store.batches == [[0], [1, 2], [3, 4]]


def test_alone_a_leader_does_not_wait_for_company():
    batcher: Batcher[int, int] = Batcher(lambda items: list(items), wait_s=WAIT_S, linger_s=5.0)
    started = time.monotonic()
    assert [batcher.submit(n) for n in range(3)] == [0, 1, 2]
    assert time.monotonic() - started < 1.0


def wait_for_waiting(batcher: Batcher[int, str], count: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while len(batcher._waiting) < count:
        assert time.monotonic() < deadline, f"{count} submits never arrived"
        time.sleep(0.001)
