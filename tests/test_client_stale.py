"""An event older than what a breaker holds is ignored, and says so: the callback helper's log,
the breaker's history (`router breakers history`), naming the newer event it lost to."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from breaker_client import Breakers, apply_callback
from click.testing import CliRunner

from router.cli import cli
from tests.test_client_callback import EVENT_MS, enrichment, event_of, notification

NEWER_SOURCE = "monitor:123456 event:999 delivery:dlv_newer"


@pytest.fixture
def breakers(redis_url: str, key_prefix: str) -> Iterator[Breakers]:
    b = Breakers.from_url(redis_url, prefix=key_prefix, sync=False)
    yield b
    b.stop()


def test_a_stale_write_is_in_the_history_with_the_event_it_lost_to(breakers: Breakers) -> None:
    breakers.close("bank-charge", "0001", reason="recovered", version=EVENT_MS + 60_000)
    breakers.open(
        "bank-charge", "0001", reason="renotify", version=EVENT_MS + 90_000, source=NEWER_SOURCE
    )
    result = breakers.open(
        "bank-charge", "0001", reason="old alert", version=EVENT_MS, source="monitor:1 event:old"
    )
    assert result.outcome == "stale" and result.newer_source == NEWER_SOURCE
    assert breakers.state("bank-charge", "0001").state == "open"
    [stale, *_] = breakers.history("bank-charge", "0001", limit=10)
    assert stale.action == "stale_open" and stale.stale
    assert (stale.old_state, stale.new_state) == ("open", "open")
    assert (stale.reason, stale.source, stale.version) == (
        "old alert",
        "monitor:1 event:old",
        EVENT_MS,
    )
    assert (stale.newer_version, stale.newer_source) == (EVENT_MS + 90_000, NEWER_SOURCE)


def test_stale_entries_keep_the_history_capped(redis_url: str, key_prefix: str) -> None:
    capped = Breakers.from_url(redis_url, prefix=key_prefix, sync=False, history_max=3)
    try:
        capped.open("fx", reason="now", version=EVENT_MS)
        for n in range(10):
            assert capped.close("fx", reason=f"old {n}", version=EVENT_MS - n - 1).outcome == (
                "stale"
            )
        history = capped.history("fx", None, limit=100)
        assert [e.action for e in history] == ["stale_close"] * 3
    finally:
        capped.stop()


def test_the_callback_helper_logs_a_stale_event_naming_the_newer_one(
    breakers: Breakers, caplog: pytest.LogCaptureFixture
) -> None:
    newer = notification("recovery", event_time_ms=EVENT_MS + 60_000, event_id="777")
    apply_callback(breakers, event_of(newer), "bank-charge", tag="bank_code")
    caplog.set_level(logging.INFO, logger="breaker_client")
    e = enrichment(("0001", "Alert"), ("0002", "OK"))
    apply_callback(breakers, event_of(notification(), e), "bank-charge", tag="bank_code")
    stale = [r for r in caplog.records if "ignored" in r.getMessage()]
    [record] = stale  # the notified group's key only: 0002 came from the read
    message = record.getMessage()
    assert record.levelno == logging.WARNING
    assert message.startswith("breaker callback: bank-charge 0001 ignored this alert from 20")
    assert "already holds a newer event from " in message
    assert "(monitor:123456 event:777 delivery:d-1)" in message
    assert "`router breakers history bank-charge 0001`" in message


def test_the_callback_helper_logs_each_change_in_one_line(
    breakers: Breakers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="breaker_client")
    apply_callback(breakers, event_of(notification()), "bank-charge", tag="bank_code")
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("breaker bank-charge 0001: closed -> open (alert; delivery=d-1 ")


def test_breakers_history_shows_what_a_stale_event_lost_to(
    breakers: Breakers, redis_url: str, key_prefix: str
) -> None:
    breakers.close("bank-charge", "0001", reason="recovered", version=1_795_350_300_000)
    breakers.open("bank-charge", "0001", reason="alert from the file", version=1_795_350_000_000)
    result = CliRunner().invoke(
        cli,
        ["breakers", "history", "bank-charge", "0001"],
        env={"REDIS_URL": redis_url, "BREAKERS_PREFIX": key_prefix},
    )
    assert result.exit_code == 0, result.output
    first, second = result.output.splitlines()[:2]
    assert "(unchanged)" in first and "stale_open" in first and "alert from the file" in first
    assert second.strip() == (
        "ignored: this event (at 2026-11-22 12:20:00Z) is older than the one the breaker "
        "holds (at 2026-11-22 12:25:00Z, unknown source)"
    )


def test_a_keyless_breakers_stale_event_is_in_its_history(breakers: Breakers) -> None:
    newer = notification("recovery", event_time_ms=EVENT_MS + 60_000, event_id="777")
    apply_callback(breakers, event_of(newer), "bank-charge")
    late = apply_callback(breakers, event_of(notification()), "bank-charge")
    assert [r.outcome for r in late] == ["stale"]
    stale, *_ = breakers.history("bank-charge", None, limit=5)
    assert (stale.action, stale.version, stale.newer_version) == (
        "stale_open",
        EVENT_MS,
        EVENT_MS + 60_000,
    )
    assert stale.source == "monitor:123456 event:8123456789012345678 delivery:d-1"
