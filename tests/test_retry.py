"""Retry timing: the schedule, jitter bounds, and a receiver's Retry-After."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from router.retry import JITTER, MAX_RETRY_AFTER_S, RetryPolicy, parse_retry_after

SCHEDULE = (5.0, 30.0, 120.0)


def policy(schedule: tuple[float, ...] = SCHEDULE, rng_value: float = 0.5) -> RetryPolicy:
    return RetryPolicy(schedule, rng=lambda: rng_value)


def test_defaults_are_twenty_percent_jitter_and_a_two_hour_retry_after_cap():
    assert JITTER == 0.2
    assert MAX_RETRY_AFTER_S == 7200.0
    assert RetryPolicy(SCHEDULE).max_attempts == 4


@pytest.mark.parametrize(
    ("attempts_made", "delay"),
    [(-1, None), (0, None), (1, 5.0), (2, 30.0), (3, 120.0), (4, None), (50, None)],
)
def test_next_delay_indexes_the_schedule_and_gives_up_past_its_end(attempts_made, delay):
    assert policy().next_delay(attempts_made) == delay


def test_an_empty_schedule_never_retries():
    empty = policy(schedule=())
    assert empty.max_attempts == 1
    assert empty.next_delay(1) is None


@pytest.mark.parametrize(
    ("rng_value", "factor"),
    [(0.0, 0.8), (0.25, 0.9), (0.5, 1.0), (0.75, 1.1), (1.0, 1.2)],
)
@pytest.mark.parametrize("attempts_made", [1, 2, 3])
def test_jitter_stays_within_twenty_percent_of_the_base(rng_value, factor, attempts_made):
    base = SCHEDULE[attempts_made - 1]
    assert policy(rng_value=rng_value).next_delay(attempts_made) == pytest.approx(base * factor)


def test_zero_jitter_gives_the_schedule_exactly():
    exact = RetryPolicy(SCHEDULE, jitter=0.0, rng=lambda: 1.0)
    assert [exact.next_delay(n) for n in (1, 2, 3)] == [5.0, 30.0, 120.0]


@pytest.mark.parametrize(
    ("rng_value", "retry_after", "delay"),
    [
        (0.5, None, 30.0),
        (0.5, 90.0, 90.0),  # the receiver asks for longer: wait longer
        (0.5, 29.0, 30.0),  # shorter than the schedule: never sooner than planned
        (0.5, 0.0, 30.0),
        (1.0, 33.0, 36.0),  # still below the jittered 36 s
        (0.0, 25.0, 25.0),  # above the jittered 24 s
        (0.5, MAX_RETRY_AFTER_S, MAX_RETRY_AFTER_S),
        (0.5, 86400.0, MAX_RETRY_AFTER_S),  # a day is capped at two hours
    ],
)
def test_retry_after_raises_the_delay_up_to_the_cap(rng_value, retry_after, delay):
    assert policy(rng_value=rng_value).next_delay(2, retry_after) == pytest.approx(delay)


def test_retry_after_does_not_revive_an_exhausted_delivery():
    assert policy().next_delay(4, 10.0) is None


@pytest.mark.parametrize(
    ("schedule_s", "rng_value", "retry_after", "jittered"),
    [
        (10800.0, 0.0, 10000.0, 8640.0),  # 3 h * 0.8; got 7200
        (10800.0, 0.5, 20000.0, 10800.0),  # got 7200
    ],
)
def test_retry_after_never_lowers_a_long_scheduled_delay(
    schedule_s, rng_value, retry_after, jittered
):
    long = policy(schedule=(schedule_s,), rng_value=rng_value)
    assert long.next_delay(1) == pytest.approx(jittered)
    assert long.next_delay(1, retry_after) == pytest.approx(jittered)


# -- parse_retry_after --------------------------------------------------------------------

NOW = datetime(2015, 10, 21, 7, 27, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("86400", 86400.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 60.0),  # in the future
        ("Wed, 21 Oct 2015 09:27:30 GMT", 7230.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # now
        ("Wed, 21 Oct 2015 07:26:00 GMT", 0.0),  # in the past: retry on schedule
        ("Tue, 20 Oct 2015 07:27:00 GMT", 0.0),
        ("Wed, 21 Oct 2015 09:28:00 +0200", 60.0),  # an offset is honoured
        ("Wed, 21 Oct 2015 07:28:00 -0000", 60.0),  # no zone: taken as UTC
    ],
)
def test_parse_retry_after_reads_seconds_and_http_dates(value, seconds):
    assert parse_retry_after(value, now=NOW) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "soon",
        "-5",
        "1.5",
        "5s",
        "Wed, 32 Oct 2015 07:28:00 GMT",
        "21/10/2015",
    ],
)
def test_parse_retry_after_returns_none_for_junk(value):
    assert parse_retry_after(value, now=NOW) is None


@pytest.mark.parametrize("value", ["²", "1²"])
def test_parse_retry_after_survives_unicode_digits_float_cannot_read(value):
    assert parse_retry_after(value, now=NOW) is None
