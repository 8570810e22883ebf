"""EndpointGate: per-endpoint cap, an in-process line only where it drains fast, shedding."""

from __future__ import annotations

import pytest

from router.endpoints import MAX_DEFER_S, MIN_DEFER_S, UNKNOWN_PACE_S, EndpointGate


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def gate(limit=2, max_parked=100, max_wait_s=2.0, clock=None) -> EndpointGate[str]:
    return EndpointGate(limit, max_parked=max_parked, max_wait_s=max_wait_s, clock=clock or Clock())


def test_the_cap_runs_that_many_at_once_per_endpoint():
    g = gate(limit=2)
    assert [g.admit("https://a", f"a{n}") for n in range(2)] == ["run", "run"]
    assert g.admit("https://b", "b0") == "run"  # another endpoint is not held up


def test_a_fast_endpoint_gets_a_line_a_dead_one_does_not():
    g = gate(limit=2, max_wait_s=2.0)
    g.admit("https://fast", "f0"), g.admit("https://fast", "f1")
    g.finished("https://fast", 0.01)  # pace known: 10 ms; f1 still running, slot freed
    g.admit("https://fast", "f2")
    assert [g.admit("https://fast", f"x{n}") for n in range(50)] == ["parked"] * 50

    g.admit("https://dead", "d0"), g.admit("https://dead", "d1")
    g.finished("https://dead", 10.0)  # a 10 s timeout
    g.admit("https://dead", "d2")
    deferral = g.admit("https://dead", "d3")
    assert isinstance(deferral, float) and deferral == pytest.approx(min(10.0 * 3 / 2, MAX_DEFER_S))


def test_an_unknown_endpoint_is_assumed_slow_until_measured():
    g = gate(limit=1, max_wait_s=2.0)
    assert g.admit("https://new", "n0") == "run"
    assert g.admit("https://new", "n1") == "parked"  # 2 ahead x 1 s / 1 = 2 s: fits
    assert g.admit("https://new", "n2") == pytest.approx(3 * UNKNOWN_PACE_S)


def test_finishing_hands_over_the_next_parked_item_in_order():
    g = gate(limit=1)
    g.admit("https://a", "a0")
    g.finished("https://a", 0.01)
    g.admit("https://a", "a1")
    g.admit("https://a", "a2"), g.admit("https://a", "a3")
    assert g.parked_total == 2
    assert g.finished("https://a", 0.01) == "a2"
    assert g.finished("https://a", 0.01) == "a3"
    assert g.finished("https://a", 0.01) is None  # the slot is free again
    assert g.admit("https://a", "a4") == "run"


def test_the_process_wide_bound_sends_the_rest_back():
    g = gate(limit=1, max_parked=3)
    g.admit("https://a", "a0")
    g.finished("https://a", 0.001)
    g.admit("https://a", "a1")
    results = [g.admit("https://a", f"x{n}") for n in range(5)]
    assert results[:3] == ["parked"] * 3
    assert all(isinstance(r, float) and r >= MIN_DEFER_S for r in results[3:])


def test_items_parked_too_long_are_shed_oldest_first_and_drain_takes_the_rest():
    clock = Clock()
    g = gate(limit=1, clock=clock)
    g.admit("https://a", "a0")
    g.finished("https://a", 0.01)
    g.admit("https://a", "a1")
    g.admit("https://a", "old")
    clock.now += 30
    g.admit("https://a", "new")
    assert g.shed(older_than_s=20) == ["old"]
    assert g.parked_total == 1
    assert g.drain() == ["new"]
    assert g.parked_total == 0


def test_deferrals_come_back_one_slot_apart_not_as_one_wave():
    # Every deferral used to be told the same wait (the line in process), so a burst came
    # back at once and was deferred again; now each waits for the deferrals ahead of it too.
    clock = Clock()
    g = gate(limit=2, max_parked=0, clock=clock)
    g.admit("https://a", "a0"), g.admit("https://a", "a1")
    g.finished("https://a", 0.5)  # pace 0.5 s at 2 at once: a slot frees every 0.25 s
    g.admit("https://a", "a2")
    delays = [g.admit("https://a", f"x{n}") for n in range(6)]
    first = 0.5 * 3 / 2
    assert delays == pytest.approx([first + n * 0.25 for n in range(6)])
    # Time passes: the line of deferrals moves on with it.
    clock.now += 1.0
    assert g.admit("https://a", "late") == pytest.approx(first + 6 * 0.25 - 1.0)


def test_the_line_of_deferrals_never_reaches_past_the_longest_deferral():
    # A dead endpoint's deferrals are bounded; once it answers fast again, its next
    # deferral is short, not the sum of everything deferred while it was down.
    clock = Clock()
    g = gate(limit=1, max_parked=0, clock=clock)
    g.admit("https://a", "a0")
    g.finished("https://a", 10.0)
    g.admit("https://a", "a1")
    assert all(g.admit("https://a", f"x{n}") <= MAX_DEFER_S for n in range(20))
    for _ in range(40):
        g.finished("https://a", 0.01)  # pace back to ~10 ms
        g.admit("https://a", "again")
    clock.now += MAX_DEFER_S
    assert g.admit("https://a", "fresh") < 1.0
