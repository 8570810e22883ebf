"""`is_open` and `check` answer every combination of a key's and its keyless breaker's states
as the states themselves say, at every moment of a ramp and of an override's expiry.

The hot path inlines these rules (`Breakers.is_open`, for speed); the reference here reads
each breaker's `BreakerState` (`breakers.state(..., local=True)`), which is computed by a
separate, plain implementation of the same rules (`states.breaker_state`).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable

import pytest
from breaker_client import BreakerOpen, Breakers, BreakerState

from tests import test_client_breakers
from tests.test_client_breakers import T0, Clock, MakeBreakers

clock = test_client_breakers.clock
make_breakers = test_client_breakers.make_breakers

RAMP_WINDOW_S = 60.0
OVERRIDE_S = 20.0
# Seconds after the writes: the ramp at 10 %, 25 % and 55 %, each override before and after
# its expiry, and the ramp done.
MOMENTS = (0.0, 10.0, 30.0, 70.0)
# Below the ramp's first share, between, and above its share at every moment but the last.
DRAWS = (0.05, 0.5, 0.99)

Write = Callable[[Breakers, str, str | None], object]


def _open(b: Breakers, name: str, key: str | None) -> object:
    return b.open(name, key, reason="alert")


def _recover(b: Breakers, name: str, key: str | None) -> object:
    return b.close(name, key, reason="recovered")


def _close(b: Breakers, name: str, key: str | None) -> object:
    return b.close(name, key, reason="recovered", ramp=False)


def _force_open_for(b: Breakers, name: str, key: str | None) -> object:
    return b.force_open(name, key, reason="maintenance", by="ana", expires_in=OVERRIDE_S)


def _force_close_for(b: Breakers, name: str, key: str | None) -> object:
    return b.force_close(name, key, reason="false alarm", by="bo", expires_in=OVERRIDE_S)


def _force_open(b: Breakers, name: str, key: str | None) -> object:
    return b.force_open(name, key, reason="maintenance", by="ana")


def _force_close(b: Breakers, name: str, key: str | None) -> object:
    return b.force_close(name, key, reason="false alarm", by="bo")


def _shadow(b: Breakers, name: str, key: str | None) -> object:
    return b.set_shadow(name, key, on=True, by="alice")


# Each a breaker's history, in writes: every state `is_open` tells apart, and each override
# with an expiry over a monitor state that differs from it (what answers once it ends).
HISTORIES: dict[str, tuple[Write, ...]] = {
    "never written": (),
    "closed": (_open, _close),
    "open": (_open,),
    "recovering": (_open, _recover),
    "forced open for 20 s, then recovering": (_open, _recover, _force_open_for),
    "forced open for 20 s, then open": (_open, _force_open_for),
    "forced closed for 20 s, then open": (_open, _force_close_for),
    "forced closed for 20 s, then recovering": (_open, _recover, _force_close_for),
    "forced open": (_force_open,),
    "forced closed over open": (_open, _force_close),
}
LEVELS = [(history, shadow) for history in HISTORIES for shadow in (False, True)]


def refuses(state: BreakerState, draw: float) -> bool:
    if state.state in ("open", "forced_open"):
        return True
    return state.state == "recovering" and draw >= (state.ramp_share or 0.0)


def expected(b: Breakers, name: str, key: str, draw: float) -> tuple[bool, int]:
    """What `is_open(name, key)` must answer, and how many would-be refusals it counts: each
    level refuses by its state; shadow mode (the level's or its keyless breaker's) lets a
    refusal through and counts it, unless a person holds that level forced open."""
    keyless = b.state(name, None, local=True)
    counted = 0
    for state in (b.state(name, key, local=True), keyless):
        if refuses(state, draw):
            if (state.shadow or keyless.shadow) and state.state != "forced_open":
                counted += 1
                continue
            return True, counted
    return False, counted


def test_is_open_and_check_answer_every_state_pair_as_the_states_say(
    make_breakers: MakeBreakers, clock: Clock
) -> None:
    draw = [0.0]
    b = make_breakers(sync=False, ramp_window=RAMP_WINDOW_S, rng=lambda: draw[0])
    b.refresh()
    pairs = list(itertools.product(LEVELS, LEVELS))
    for i, ((key_history, key_shadow), (keyless_history, keyless_shadow)) in enumerate(pairs):
        for target, history, shadow in (
            ("k", key_history, key_shadow),
            (None, keyless_history, keyless_shadow),
        ):
            for write in HISTORIES[history]:
                write(b, f"v{i}", target)
            if shadow:
                _shadow(b, f"v{i}", target)
    mismatches = []
    for moment, draw[0] in itertools.product(MOMENTS, DRAWS):
        clock.now = T0 + moment
        for i, (key_level, keyless_level) in enumerate(pairs):
            name = f"v{i}"
            want, want_counted = expected(b, name, "k", draw[0])
            # The tally's own counter: `stats()` looks at every breaker, 800 of them here.
            before = b._shadow.counted
            answer = b.is_open(name, "k")
            counted = b._shadow.counted - before
            try:
                b.check(name, "k")
                checked = False
            except BreakerOpen:
                checked = True
            if (answer, counted, checked) != (want, want_counted, want):
                mismatches.append(
                    f"key {key_level}, keyless {keyless_level}, at +{moment:g} s, draw "
                    f"{draw[0]}: is_open {answer} counting {counted}, check refused {checked}; "
                    f"expected {want} counting {want_counted}"
                )
    assert not mismatches, "\n".join(mismatches[:20]) + f"\n({len(mismatches)} in all)"


@pytest.mark.parametrize(("history", "shadow"), LEVELS)
def test_the_keyless_breaker_alone_answers_as_its_state_says(
    make_breakers: MakeBreakers, clock: Clock, history: str, shadow: bool
) -> None:
    draw = [0.0]
    b = make_breakers(sync=False, ramp_window=RAMP_WINDOW_S, rng=lambda: draw[0])
    b.refresh()
    for write in HISTORIES[history]:
        write(b, "v", None)
    if shadow:
        _shadow(b, "v", None)
    for moment, draw[0] in itertools.product(MOMENTS, DRAWS):
        clock.now = T0 + moment
        state = b.state("v", None, local=True)
        want = refuses(state, draw[0]) and not (state.shadow and state.state != "forced_open")
        assert b.is_open("v") is want, (history, shadow, moment, draw[0])
        with pytest.raises(BreakerOpen) if want else contextlib.nullcontext():
            b.check("v")
