"""`router breakers shadow|list|report`: shadow mode set by a person, counted, reported."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from breaker_client import Breakers
from click.testing import CliRunner

from router.cli import cli

MINUTE_S = 60.0
DAY_S = 86400.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def env(redis_url: str, key_prefix: str) -> dict[str, str]:
    return {"REDIS_URL": redis_url, "BREAKERS_PREFIX": key_prefix, "ROUTER_OPERATOR": "alice"}


@pytest.fixture
def clock() -> Clock:
    return Clock(time.time() - 2 * DAY_S)


@pytest.fixture
def service(redis_url: str, key_prefix: str, clock: Clock) -> Iterator[Breakers]:
    """A service's handle whose clock the test moves (its writes and counts are stamped by it)."""
    b = Breakers.from_url(redis_url, prefix=key_prefix, sync=False, clock=clock)
    b.refresh()
    yield b
    b.stop()


def invoke(env: dict[str, str], *args: str) -> str:
    result = CliRunner().invoke(cli, ["breakers", *args], env=env)
    assert result.exit_code == 0, result.output
    return result.output


def calls(service: Breakers, n: int, key: str = "0001") -> list[bool]:
    return [service.is_open("bank-charge", key) for _ in range(n)]


def test_shadow_on_counts_list_and_report_then_shadow_off_refuses(
    env: dict[str, str], service: Breakers, clock: Clock
) -> None:
    said = invoke(env, "shadow", "bank-charge", "--on", "--reason", "new 5xx monitor")
    assert "bank-charge and every key of bank-charge: shadow mode on" in said
    service.refresh()

    # Two days ago: open for ten minutes, 7 calls let through.
    service.open("bank-charge", "0001", reason="5xx above 5%")
    assert calls(service, 4) == [False] * 4
    clock.now += 10 * MINUTE_S
    assert calls(service, 3) == [False] * 3
    service.close("bank-charge", "0001", reason="recovered", ramp=False)
    assert calls(service, 5) == [False] * 5  # closed: nothing it would have refused
    # Now: open again, still open.
    clock.now = time.time() - 5 * MINUTE_S
    service.open("bank-charge", "0001", reason="5xx above 5%")
    assert calls(service, 2) == [False] * 2
    service.open("bank-charge", "0002", reason="5xx above 5%")
    assert calls(service, 1, "0002") == [False]
    assert service.flush_shadow() == 10

    listed = invoke(env, "list")
    assert "shadow mode: 2 calls let through it would have refused" not in listed
    assert "shadow mode: 9 calls let through it would have refused" in listed
    assert "shadow mode: 1 calls let through" in listed
    rows = {(r["name"], r["key"]): r for r in json.loads(invoke(env, "list", "--json"))}
    assert rows[("bank-charge", "0001")]["shadow_refusals"] == 9
    assert rows[("bank-charge", "0001")]["in_shadow"] is True
    assert rows[("bank-charge", "0001")]["shadow"] is False  # covered by its name's
    assert rows[("bank-charge", None)]["shadow"] is True
    assert rows[("bank-charge", None)]["shadow_by"] == "alice"

    text = invoke(env, "report", "bank-charge", "0001", "--since", "7d")
    assert "bank-charge 0001" in text and "shadow mode; 2 period(s) open" in text
    assert "would have refused 9 calls" in text
    lines = [line for line in text.splitlines() if "->" in line]
    assert "10m00s" in lines[0] and lines[0].rstrip().endswith("7 calls")
    assert "ongoing" in lines[1] and lines[1].rstrip().endswith("2 calls")

    [one] = json.loads(invoke(env, "report", "bank-charge", "0001", "--since", "1d", "--json"))
    assert one["refusals"] == 2 and len(one["periods"]) == 1
    assert one["periods"][0]["end_ms"] is None and one["periods"][0]["duration_ms"] >= 299_000
    everything = json.loads(invoke(env, "report", "bank-charge", "--json"))
    assert {(r["key"], r["refusals"]) for r in everything} == {(None, 0), ("0001", 9), ("0002", 1)}

    said = invoke(env, "shadow", "bank-charge", "--off")
    assert "shadow mode off" in said
    service.refresh()
    assert service.is_open("bank-charge", "0001")
    assert "was in shadow mode: 9 calls" in invoke(env, "list")


def test_a_breaker_kept_open_before_the_window_is_reported_from_its_start(
    env: dict[str, str], service: Breakers, clock: Clock
) -> None:
    service.set_shadow("bank-charge", "0001", on=True, by="alice")
    service.open("bank-charge", "0001", reason="alert")
    assert calls(service, 3) == [False] * 3
    service.flush_shadow()
    text = invoke(env, "report", "bank-charge", "0001", "--since", "1d")
    assert "1 period(s) open, would have refused 0 calls" in text
    assert "before " in text and "ongoing" in text and "1d00h" in text


@pytest.mark.parametrize(
    "args, expected",
    [
        (["shadow", "bank-charge"], "--on"),
        (["shadow", "bad:name", "--on"], "breaker name"),
        (["report", "bank-charge", "--since", "soon"], "--since"),
    ],
)
def test_shadow_mistakes_are_usage_errors(
    env: dict[str, str], args: list[str], expected: str
) -> None:
    result = CliRunner().invoke(cli, ["breakers", *args], env=env)
    assert result.exit_code == 2
    assert expected in result.output


def test_a_report_of_a_breaker_never_written_says_so(env: dict[str, str]) -> None:
    assert "No breaker fx-quotes" in invoke(env, "report", "fx-quotes")
