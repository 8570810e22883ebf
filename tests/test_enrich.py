"""Enrichment through the real datadog-api-client, over HTTP, against the stub Datadog API."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis as redis_lib
from redis.backoff import NoBackoff
from redis.retry import Retry

from router.callback_body import build_callback_body
from router.config import Settings
from router.datadog_stub import StubClient, StubServer
from router.enrich import KEYS_MISSING, Enricher, recommended_budget
from router.enrich.cache import SingleFlight
from router.enrich.snapshot import event_from_api
from router.errors import ConfigError
from router.keys import RouterKeys
from router.model import Enrichment, Notification
from tests.conftest import free_port
from tests.support import wait_for

MONITOR_ID = "42"
EVENT_ID = "6327818702635911562"  # above 2^53: a float would turn it into ...911000
GROUPS = {
    "bank_code:0001,env:prod": "Alert",
    "bank_code:0002,env:prod": "OK",
    "bank_code:0003,env:prod": "Warn",
}
# Slack for the scheduler and a loaded machine in bound checks; the bound itself is the budget.
MARGIN_S = 1.0


class FakeTime:
    """A monotonic clock that `sleep` moves forward instantly (real time still passes too)."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def clock(self) -> float:
        return time.monotonic() + self.offset

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.offset += seconds


@pytest.fixture(scope="module")
def server() -> Iterator[StubServer]:
    with StubServer() as running:
        yield running


@pytest.fixture
def stub(server: StubServer) -> StubClient:
    client = server.client()
    client.reset()
    client.define_monitor(MONITOR_ID, name="Bank API errors", tags=["team:payments"], groups=GROUPS)
    return client


@pytest.fixture
def settings(server: StubServer) -> Settings:
    return Settings(dd_api_key="api-key", dd_app_key="app-key", dd_api_host=server.url)


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


@pytest.fixture
def enricher(settings: Settings, fake: FakeTime) -> Iterator[Enricher]:
    with Enricher(settings, clock=fake.clock, sleep=fake.sleep) as made:
        yield made


def notification(**changes: Any) -> Notification:
    """What the recommended custom payload yields: monitor id, event id, tags and scope."""
    base = Notification(
        source="datadog",
        dedup_key=f"datadog:{EVENT_ID}:alert",
        transition="alert",
        datadog_transition="Triggered",
        renotification=False,
        title="[Triggered on {bank_code:0001,env:prod}] Bank API errors",
        message="circuit-breaker-callback: https://bank-charge.internal/breaker/callback",
        callback_urls=("https://bank-charge.internal/breaker/callback",),
        received_at_ms=int(time.time() * 1000),
        event_id=EVENT_ID,
        monitor_id=MONITOR_ID,
        tags=("monitor", "bank_code:0001", "env:prod"),
        scope="bank_code:0001,env:prod",
    )
    return replace(base, **changes)


def sns_like(**changes: Any) -> Notification:
    """SNS and the default payload: no tags; the monitor id only if a link gave it away."""
    return notification(source="sns", tags=(), **changes)


def timed(enricher: Enricher, n: Notification, budget_s: float) -> tuple[Enrichment, float]:
    started = time.monotonic()
    result = enricher.enrich(n, budget_s=budget_s)
    return result, time.monotonic() - started


# ---- what enrichment adds ----------------------------------------------------------------


def test_delivery_carries_monitor_name_groups_states_and_tags(
    enricher: Enricher, stub: StubClient
) -> None:
    result = enricher.enrich(notification(), budget_s=5)
    assert result.status == "complete"
    assert result.problems == ()
    assert (result.monitor_id, result.monitor_name) == (MONITOR_ID, "Bank API errors")
    assert result.overall_state == "Alert"
    assert result.monitor_tags == ("team:payments",)
    assert result.groups is not None
    assert {(g.name, g.status, g.tags) for g in result.groups} == {
        ("bank_code:0001,env:prod", "Alert", ("bank_code:0001", "env:prod")),
        ("bank_code:0002,env:prod", "OK", ("bank_code:0002", "env:prod")),
        ("bank_code:0003,env:prod", "Warn", ("bank_code:0003", "env:prod")),
    }
    # Tags in the notification: the event was not needed, so not read.
    assert stub.calls_under("/api/v1/events/") == 0

    body = build_callback_body("delivery-1", notification(), result)
    assert body["monitor"]["name"] == "Bank API errors"
    assert body["enrichment"] == {"status": "complete", "complete": True, "problems": []}
    groups = {g["name"]: g for g in body["monitor"]["groups"]}
    assert groups["bank_code:0001,env:prod"]["tags"] == ["bank_code:0001", "env:prod"]


def test_event_tags_are_read_when_the_notification_lacks_them(
    enricher: Enricher, stub: StubClient
) -> None:
    # A monitor-alert event's `payload` is an object where the spec says string (ref. 5.5).
    stub.define_event(
        EVENT_ID,
        tags=["monitor", "bank_code:0001", "env:prod"],
        payload={"monitor": {"id": int(MONITOR_ID)}},
        date_happened=1_700_000_000,
    )
    result = enricher.enrich(sns_like(), budget_s=5)
    assert result.status == "complete", result.problems
    assert result.event_tags == ("monitor", "bank_code:0001", "env:prod")
    assert result.event_time_ms == 1_700_000_000_000
    assert result.monitor_name == "Bank API errors"


def test_every_id_in_the_callback_body_is_an_exact_string(
    enricher: Enricher, stub: StubClient
) -> None:
    # As recorded in 2021: no `id_str`, so the JSON number itself must survive exactly.
    stub.define_event(EVENT_ID, tags=["monitor"], monitor_id=int(MONITOR_ID), id_str=False)
    n = sns_like(monitor_id=None)
    result = enricher.enrich(n, budget_s=5)
    assert result.status == "complete", result.problems
    body = json.loads(json.dumps(build_callback_body("d-1", n, result)))
    assert body["monitor"]["id"] == MONITOR_ID
    assert body["event"]["id"] == EVENT_ID


# ---- the event's indexing delay -----------------------------------------------------------


def test_unindexed_event_does_not_hold_back_a_known_monitor(
    enricher: Enricher, stub: StubClient, fake: FakeTime
) -> None:
    stub.define_event(EVENT_ID, tags=["monitor"], not_found_calls=1)
    result, elapsed = timed(enricher, sns_like(), budget_s=30)
    assert result.status == "partial"
    assert result.monitor_name == "Bank API errors"
    assert result.event_tags is None
    assert any("not yet readable" in problem for problem in result.problems)
    assert fake.sleeps == []
    assert elapsed < 1.0
    assert stub.calls_to(f"/api/v1/events/{EVENT_ID}") == 1


def test_unindexed_event_is_awaited_when_only_it_names_the_monitor(
    enricher: Enricher, stub: StubClient, fake: FakeTime
) -> None:
    stub.define_event(EVENT_ID, tags=["monitor", "bank_code:0001"], not_found_calls=3, text=(
        "%%% \n[[Monitor Status](https://app.datadoghq.com/monitors#42?group=bank_code%3A0001)]"
        "\n %%%"
    ))  # fmt: skip
    n = sns_like(monitor_id=None)
    result = enricher.enrich(n, budget_s=recommended_budget(n))
    assert result.status == "complete", result.problems
    assert result.monitor_id == MONITOR_ID  # found in the event text's monitor link
    assert result.event_tags == ("monitor", "bank_code:0001")
    assert fake.sleeps == [1.0, 2.0, 4.0]
    assert stub.calls_to(f"/api/v1/events/{EVENT_ID}") == 4


def test_event_never_readable_ends_within_the_budget(
    enricher: Enricher, stub: StubClient, fake: FakeTime
) -> None:
    stub.define_event(EVENT_ID, not_found_calls=1000)
    result = enricher.enrich(sns_like(monitor_id=None), budget_s=10)
    assert result.status == "none"
    assert "not readable yet" in result.problems[0]
    assert sum(fake.sleeps) < 10


# ---- rate limits --------------------------------------------------------------------------


def test_429_is_waited_out_when_the_reset_fits_the_budget(
    enricher: Enricher, stub: StubClient, fake: FakeTime
) -> None:
    stub.add_fault(f"/api/v1/monitor/{MONITOR_ID}", status=429, reset_s=3)
    result = enricher.enrich(notification(), budget_s=5)
    assert result.status == "complete", result.problems
    assert fake.sleeps and 2.5 <= fake.sleeps[0] <= 3.0
    assert stub.calls_to(f"/api/v1/monitor/{MONITOR_ID}") == 2
    assert enricher.health()["rate_limits"]["get_monitors"]["limit"] == 3000


def test_429_beyond_the_budget_gives_up_at_once_and_stops_calling(
    enricher: Enricher, stub: StubClient, fake: FakeTime
) -> None:
    stub.add_fault("/api/v1/monitor/", status=429, reset_s=30, times=None)
    stub.define_monitor(43, name="Other", groups={"bank_code:0001": "Alert"})
    result, elapsed = timed(enricher, notification(), budget_s=5)
    assert result.status == "none"
    assert any("rate limit" in problem for problem in result.problems)
    assert fake.sleeps == []
    assert elapsed < 1.0
    # Until the reset, no monitor read is even tried.
    other = enricher.enrich(notification(monitor_id="43"), budget_s=5)
    assert other.status == "none"
    assert stub.calls_under("/api/v1/monitor/") == 1
    assert "GetMonitor" in enricher.health()["blocked"]


def test_a_used_up_window_is_respected_before_any_429(settings: Settings, stub: StubClient) -> None:
    stub.set_rate_limit("get_monitors", limit=1, period_s=1)
    stub.define_monitor(43, name="Other", groups={"bank_code:0001": "Alert"})
    with Enricher(settings) as enricher:
        assert enricher.enrich(notification(), budget_s=5).status == "complete"
        # That answer said X-Ratelimit-Remaining: 0, reset in 1 s: beyond a 0.5 s budget.
        other = enricher.enrich(notification(monitor_id="43"), budget_s=0.5)
        assert other.status == "none"
        assert stub.calls_under("/api/v1/monitor/") == 1
        # With room in the budget, the reset is waited out and then the read made.
        waited, elapsed = timed(enricher, notification(monitor_id="43"), budget_s=5)
    assert waited.status == "complete", waited.problems
    assert stub.calls_under("/api/v1/monitor/") == 2
    assert elapsed >= 0.3


# ---- a failing, dead or slow API ----------------------------------------------------------


def test_server_errors_give_partial_within_the_budget(settings: Settings, stub: StubClient) -> None:
    stub.add_fault(f"/api/v1/events/{EVENT_ID}", status=503, times=None)
    with Enricher(settings) as enricher:
        result, elapsed = timed(enricher, sns_like(), budget_s=2)
        assert result.status == "partial"  # the monitor was read; the event was not
        assert any("unavailable" in problem for problem in result.problems)
        assert elapsed < 2 + MARGIN_S
        assert enricher.health()["outages"]["GetEvent"]["message"]


def test_server_errors_on_the_monitor_give_none_within_the_budget(
    settings: Settings, stub: StubClient
) -> None:
    stub.add_fault(f"/api/v1/monitor/{MONITOR_ID}", status=500, times=None)
    with Enricher(settings) as enricher:
        result, elapsed = timed(enricher, notification(), budget_s=1.5)
    assert result.status == "none"
    assert elapsed < 1.5 + MARGIN_S
    # One call, one more after the 1 s cooldown: never one per delivery or per retry loop.
    assert stub.calls_to(f"/api/v1/monitor/{MONITOR_ID}") == 2


def test_dead_api_gives_none_within_the_budget(caplog: pytest.LogCaptureFixture) -> None:
    dead = Settings(dd_api_key="k", dd_app_key="a", dd_api_host=f"http://127.0.0.1:{free_port()}")
    with Enricher(dead) as enricher, caplog.at_level(logging.WARNING, logger="router.enrich"):
        results = []
        started = time.monotonic()
        for _ in range(5):
            results.append(enricher.enrich(notification(), budget_s=1.5))
        elapsed = time.monotonic() - started
    assert {r.status for r in results} == {"none"}
    assert all("unavailable" in r.problems[0] for r in results)
    # The first waits one cooldown for a second try; the others, during the outage, not at all.
    assert elapsed < 1.5 + MARGIN_S
    assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 1


def test_slow_event_gives_partial_within_the_budget(settings: Settings, stub: StubClient) -> None:
    stub.add_fault(f"/api/v1/events/{EVENT_ID}", sleep_s=3)
    with Enricher(settings) as enricher:
        result, elapsed = timed(enricher, sns_like(), budget_s=1)
    assert result.status == "partial"
    assert result.monitor_name == "Bank API errors"
    assert any("did not answer" in problem for problem in result.problems)
    assert elapsed < 1 + MARGIN_S


def test_slow_monitor_gives_none_within_the_budget(settings: Settings, stub: StubClient) -> None:
    stub.add_fault(f"/api/v1/monitor/{MONITOR_ID}", sleep_s=3)
    with Enricher(settings) as enricher:
        result, elapsed = timed(enricher, notification(), budget_s=0.8)
    assert result.status == "none"
    assert elapsed < 0.8 + MARGIN_S


# ---- credentials --------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
def test_refused_keys_show_in_health_and_are_logged_once(
    enricher: Enricher, stub: StubClient, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    stub.set_keys(["another-api-key"], ["another-app-key"], status=status)
    with caplog.at_level(logging.WARNING, logger="router.enrich"):
        results = [enricher.enrich(notification(), budget_s=5) for _ in range(20)]
        results += [enricher.enrich(sns_like(), budget_s=5) for _ in range(5)]
    assert {r.status for r in results} == {"none"}
    assert "refused" in results[0].problems[0]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    # One line per cause: GetMonitor refused; GetEvent refused too.
    assert len(errors) == 2
    assert all("DATADOG CREDENTIALS REFUSED" in r.getMessage() for r in errors)
    health = enricher.health()
    assert health["ok"] is False
    assert {f["status"] for f in health["auth_failures"]} == {status}
    assert any("refused" in problem for problem in health["problems"])
    # Not retried per delivery: one call per operation until the retry interval.
    assert stub.calls_under("/api/v1/") == 2


def test_fixed_keys_are_noticed_after_the_retry_interval(
    enricher: Enricher, stub: StubClient, fake: FakeTime
) -> None:
    stub.set_keys(["another-api-key"], ["another-app-key"])
    assert enricher.enrich(notification(), budget_s=5).status == "none"
    stub.set_keys(None, None)  # someone fixed the key's scopes
    assert enricher.enrich(notification(), budget_s=5).status == "none"  # not asked yet
    fake.offset += 61
    assert enricher.enrich(notification(), budget_s=5).status == "complete"
    assert enricher.health()["ok"] is True
    assert stub.calls_to(f"/api/v1/monitor/{MONITOR_ID}") == 2


def test_without_keys_enrichment_is_off_and_said_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="router.enrich"), Enricher(Settings()) as enricher:
        results = [enricher.enrich(notification(), budget_s=5) for _ in range(3)]
        health = enricher.health()
    assert {r.status for r in results} == {"none"}
    assert results[0].problems == (KEYS_MISSING,)
    assert len([r for r in caplog.records if KEYS_MISSING in r.getMessage()]) == 1
    assert health["enabled"] is False


def test_dd_site_selects_the_api_host_and_a_bad_one_stops_start_up() -> None:
    def with_keys(*, dd_site: str | None = None, dd_api_host: str | None = None) -> Settings:
        return Settings(dd_api_key="k", dd_app_key="a", dd_site=dd_site, dd_api_host=dd_api_host)

    with Enricher(with_keys(dd_site="datadoghq.eu")) as enricher:
        assert enricher.health()["api_host"] == "https://api.datadoghq.eu"
    with pytest.raises(ConfigError, match="DD_SITE"):
        Enricher(with_keys(dd_site="example.com"))
    with pytest.raises(ConfigError, match="DD_API_HOST"):
        Enricher(with_keys(dd_api_host="127.0.0.1:8787"))


# ---- sharing reads ------------------------------------------------------------------------


def test_fifty_concurrent_deliveries_of_one_monitor_cost_one_read(
    enricher: Enricher, stub: StubClient
) -> None:
    # A slow answer keeps the first read in flight while the other 49 arrive.
    stub.add_fault(f"/api/v1/monitor/{MONITOR_ID}", sleep_s=0.3)
    barrier = threading.Barrier(50)

    def deliver(_: int) -> Enrichment:
        barrier.wait()
        return enricher.enrich(notification(), budget_s=5)

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(deliver, range(50)))
    assert {r.status for r in results} == {"complete"}
    assert stub.calls_to(f"/api/v1/monitor/{MONITOR_ID}") == 1


def test_worker_processes_share_one_read_through_redis(
    settings: Settings, stub: StubClient, redis: redis_lib.Redis, key_prefix: str
) -> None:
    stub.add_fault(f"/api/v1/monitor/{MONITOR_ID}", sleep_s=0.3)
    workers = [Enricher(settings, redis_client=redis, key_prefix=key_prefix) for _ in range(3)]
    try:
        with ThreadPoolExecutor(max_workers=30) as pool:
            futures = [
                pool.submit(workers[i % 3].enrich, notification(), budget_s=5) for i in range(30)
            ]
            results = [f.result() for f in futures]
    finally:
        for worker in workers:
            worker.close()
    assert {r.status for r in results} == {"complete"}
    assert stub.calls_to(f"/api/v1/monitor/{MONITOR_ID}") == 1
    assert redis.exists(RouterKeys(key_prefix).dd_monitor(MONITOR_ID))


def test_a_dead_shared_cache_does_not_stop_enrichment(
    settings: Settings, stub: StubClient, caplog: pytest.LogCaptureFixture
) -> None:
    # Fail fast: redis-py's default client retries a refused connection for seconds.
    dead = redis_lib.Redis(host="127.0.0.1", port=free_port(), retry=Retry(NoBackoff(), 0))
    enricher = Enricher(settings, redis_client=dead, key_prefix="unused")
    with caplog.at_level(logging.WARNING, logger="router.enrich"), enricher:
        results = [enricher.enrich(notification(), budget_s=5) for _ in range(3)]
        stub.define_monitor(43, name="Other", groups={"bank_code:0001": "Alert"})
        results.append(enricher.enrich(notification(monitor_id="43"), budget_s=5))
    assert {r.status for r in results} == {"complete"}
    assert stub.calls_to(f"/api/v1/monitor/{MONITOR_ID}") == 1  # the in-process cache still works
    # Said once, and the cache is left alone for a while rather than failing on every read.
    assert len([r for r in caplog.records if "shared monitor cache" in r.getMessage()]) == 1


def test_a_cached_read_shows_the_notified_group_as_notified(
    enricher: Enricher, stub: StubClient
) -> None:
    first = enricher.enrich(notification(), budget_s=5)
    assert first.groups is not None
    # Datadog's truth moves on; the cached read (younger than its TTL) does not.
    stub.update_groups(MONITOR_ID, {"bank_code:0002,env:prod": "Alert"})
    later = notification(
        scope="bank_code:0002,env:prod", received_at_ms=int(time.time() * 1000) + 1
    )
    second = enricher.enrich(later, budget_s=5)
    assert stub.calls_to(f"/api/v1/monitor/{MONITOR_ID}") == 1
    assert second.groups is not None
    statuses = {g.name: g.status for g in second.groups}
    # The group this notification is about is as the notification says; others as read.
    assert statuses["bank_code:0002,env:prod"] == "Alert"
    assert statuses["bank_code:0003,env:prod"] == "Warn"
    # A notification older than the read is not "corrected" by it.
    older = notification(scope="bank_code:0002,env:prod", received_at_ms=1)
    assert {g.name: g.status for g in enricher.enrich(older, budget_s=5).groups or ()}[
        "bank_code:0002,env:prod"
    ] == "OK"


def test_cache_expires_after_its_ttl(enricher: Enricher, stub: StubClient, fake: FakeTime) -> None:
    enricher.enrich(notification(), budget_s=5)
    enricher.enrich(notification(), budget_s=5)
    assert stub.calls_to(f"/api/v1/monitor/{MONITOR_ID}") == 1
    fake.offset += 6  # past the 5 s TTL
    enricher.enrich(notification(), budget_s=5)
    assert stub.calls_to(f"/api/v1/monitor/{MONITOR_ID}") == 2


def test_unknown_monitor_is_reported_and_not_asked_again_at_once(
    enricher: Enricher, stub: StubClient
) -> None:
    results = [enricher.enrich(notification(monitor_id="999"), budget_s=5) for _ in range(3)]
    assert {r.status for r in results} == {"none"}
    assert "monitor 999 not found" in results[0].problems[0]
    assert stub.calls_to("/api/v1/monitor/999") == 1


def test_nothing_to_read(enricher: Enricher, stub: StubClient) -> None:
    result = enricher.enrich(notification(monitor_id=None, event_id=None), budget_s=5)
    assert result.status == "none"
    assert "neither a monitor nor an event" in result.problems[0]
    assert stub.calls()["total"] == 0


# ---- a storm over more monitors than the read pool serves in a budget --------------------


def define_monitors(stub: StubClient, ids: range) -> None:
    stub.define_monitors(
        [{"id": i, "name": f"Monitor {i}", "groups": {"bank_code:0001": "Alert"}} for i in ids]
    )


def deliver_all(enricher: Enricher, ids: range, budget_s: float) -> list[Enrichment]:
    """One delivery per monitor id, all at once, each on its own thread."""
    barrier = threading.Barrier(len(ids))

    def deliver(monitor_id: int) -> Enrichment:
        barrier.wait()
        return enricher.enrich(notification(monitor_id=str(monitor_id)), budget_s=budget_s)

    with ThreadPoolExecutor(max_workers=len(ids)) as pool:
        return list(pool.map(deliver, ids))


def test_a_queued_read_is_cancelled_when_its_last_waiter_gives_up() -> None:
    gate = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as executor:
        flight: SingleFlight[str, str] = SingleFlight(executor)
        running = flight.run("busy", lambda: "busy" if gate.wait(5) else "timeout")
        queued = flight.run("wanted", lambda: "read")
        joined = flight.run("wanted", lambda: "never called: joins the read in flight")
        assert running is not None and queued is not None and joined is queued
        assert flight.leave("wanted", queued) is False  # one waiter is still there
        assert not queued.cancelled()
        assert flight.leave("wanted", queued) is True  # the last one gives up
        assert queued.cancelled()
        # The next caller starts a fresh read rather than joining the cancelled one.
        again = flight.run("wanted", lambda: "read again")
        assert again is not None and again is not queued
        # A read already running is never cancelled: its result still serves the caches.
        assert flight.leave("busy", running) is False
        gate.set()
        assert running.result(timeout=5) == "busy"
        assert again.result(timeout=5) == "read again"
        # A new read the caller does not admit is not queued.
        assert flight.run("refused", lambda: "never", admit=lambda: False) is None
    assert len(flight) == 0


def test_abandoned_reads_do_not_hold_up_later_ones(settings: Settings, stub: StubClient) -> None:
    # Datadog answers in 0.5 s; one read at a time. Four deliveries give up while their reads
    # still queue behind a running one; a fresh monitor after them must not wait for those.
    define_monitors(stub, range(43, 48))
    stub.add_fault("/api/v1/monitor/", sleep_s=0.5, times=None)
    with Enricher(settings, max_concurrent_reads=1) as enricher, ThreadPoolExecutor(1) as bg:
        first = bg.submit(enricher.enrich, notification(), budget_s=3)
        # Its read is running now: the stub counts a request when it arrives.
        wait_for(lambda: stub.calls_to(f"/api/v1/monitor/{MONITOR_ID}") == 1, what="the read")
        given_up = deliver_all(enricher, range(43, 47), budget_s=0.2)
        assert first.result().status == "complete"
        fresh, elapsed = timed(enricher, notification(monitor_id="47"), budget_s=1.5)
    assert fresh.status == "complete", fresh.problems
    assert elapsed < 0.5 + MARGIN_S
    # Nobody wanted them any more: they were dropped before they started.
    assert sum(stub.calls_to(f"/api/v1/monitor/{i}") for i in range(43, 47)) == 0
    assert {r.status for r in given_up} == {"none"}
    # Not "Datadog did not answer": the read never started.
    assert all("still queued" in r.problems[0] for r in given_up), given_up[0].problems


def test_a_read_that_could_not_start_within_the_budget_is_not_queued(
    settings: Settings, stub: StubClient
) -> None:
    define_monitors(stub, range(43, 50))
    stub.add_fault("/api/v1/monitor/", sleep_s=0.4, times=None)
    with Enricher(settings, max_concurrent_reads=2) as enricher, ThreadPoolExecutor(6) as bg:
        # One read teaches the enricher how long a read takes now (0.4 s).
        assert enricher.enrich(notification(), budget_s=2).status == "complete"
        # Six more monitors at once: two reads run, four queue (0.8 s before a new one starts).
        storm = [bg.submit(enricher.enrich, notification(monitor_id=str(i)), budget_s=3)
                 for i in range(43, 49)]  # fmt: skip
        # Two of them are at Datadog (the stub counts on arrival), four wait behind them.
        wait_for(lambda: stub.calls_under("/api/v1/monitor/") == 3, what="two running reads")
        result, elapsed = timed(enricher, notification(monitor_id="49"), budget_s=0.5)
        assert {f.result().status for f in storm} == {"complete"}
    assert result.status == "none"
    assert result.problems[0].startswith("Datadog reads are backed up; sent without waiting")
    assert elapsed < 0.25
    assert stub.calls_to("/api/v1/monitor/49") == 0


# ---- pauses reach the reads already queued -----------------------------------------------


@pytest.mark.parametrize("refusal", [403, 429])
def test_a_pause_stops_the_reads_already_queued(
    settings: Settings, stub: StubClient, refusal: int, caplog: pytest.LogCaptureFixture
) -> None:
    define_monitors(stub, range(43, 53))
    if refusal == 429:
        stub.add_fault("/api/v1/monitor/", status=429, reset_s=30, sleep_s=0.3, times=None)
    else:
        stub.set_keys(["another-api-key"], ["another-app-key"], status=refusal)
        stub.add_fault("/api/v1/monitor/", sleep_s=0.3, times=None)
    enricher = Enricher(settings, max_concurrent_reads=2)
    with caplog.at_level(logging.WARNING, logger="router.enrich"), enricher:
        results = deliver_all(enricher, range(43, 53), budget_s=5)
    assert {r.status for r in results} == {"none"}
    expected = "refused" if refusal == 403 else "rate limit"
    assert all(expected in r.problems[0] for r in results), [r.problems for r in results]
    # The two reads running when Datadog said stop; the eight queued behind them never call.
    assert stub.calls_under("/api/v1/monitor/") == 2
    assert not [r for r in caplog.records if r.exc_info]


# ---- another process holds the read of a monitor -------------------------------------------


def test_a_dead_leaseholder_holds_up_deliveries_for_about_a_second(
    settings: Settings, stub: StubClient, redis: redis_lib.Redis, key_prefix: str
) -> None:
    # A process took the read of monitor 42 and died: its lease outlives it by 11 s.
    keys = RouterKeys(key_prefix)
    redis.set(keys.dd_monitor_read(MONITOR_ID), "token-of-a-dead-process", px=11_000)
    with Enricher(settings, redis_client=redis, key_prefix=key_prefix) as enricher:
        result, elapsed = timed(enricher, notification(), budget_s=4)
    assert result.status == "complete", result.problems
    assert elapsed < 1.0 + MARGIN_S
    assert stub.calls_to(f"/api/v1/monitor/{MONITOR_ID}") == 1
    assert redis.exists(keys.dd_monitor(MONITOR_ID))  # other processes find it now


def test_waiting_for_another_process_says_so(
    settings: Settings, stub: StubClient, redis: redis_lib.Redis, key_prefix: str
) -> None:
    redis.set(RouterKeys(key_prefix).dd_monitor_read(MONITOR_ID), "another-process", px=11_000)
    with Enricher(settings, redis_client=redis, key_prefix=key_prefix) as enricher:
        result, elapsed = timed(enricher, notification(), budget_s=0.3)
    assert result.status == "none"
    assert result.problems == (
        f"another router process was reading monitor {MONITOR_ID} and its result did not "
        "arrive within the budget",
    )
    assert elapsed < 0.3 + MARGIN_S


# ---- answers the client cannot read --------------------------------------------------------


class RawApi:
    """A Datadog API stand-in answering fixed (status, body) per path prefix, for answers the
    stub never gives: bodies the client cannot deserialise, ids as a double would round them."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, Any]] = {}
        self.calls: list[str] = []
        raw = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                raw.calls.append(path)
                status, body = next(
                    (answer for prefix, answer in raw.routes.items() if path.startswith(prefix)),
                    (404, {"errors": ["Not found"]}),
                )
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def raw() -> Iterator[RawApi]:
    api = RawApi()
    yield api
    api.close()


MONITOR_BODY = {
    "id": int(MONITOR_ID),
    "name": "Bank API errors",
    "type": "query alert",
    "query": "avg(last_5m):sum:vendor.errors{*} by {bank_code,env}.as_count() > 10",
    "overall_state": "Alert",
    "tags": ["team:payments"],
    "state": {"groups": {"bank_code:0001,env:prod": {"status": "Alert"}}},
}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"id": int(MONITOR_ID), "name": "no type, no query"}, id="missing-fields"),
        pytest.param(["query alert", "avg(last_5m):x > 1"], id="json-array"),
        pytest.param({"type": "query alert", "query": "q", "name": "no id"}, id="no-id"),
    ],
)
def test_an_unreadable_monitor_answer_is_an_outage_logged_once(
    raw: RawApi, fake: FakeTime, body: Any, caplog: pytest.LogCaptureFixture
) -> None:
    raw.routes["/api/v1/monitor/"] = (200, body)
    settings = Settings(dd_api_key="k", dd_app_key="a", dd_api_host=raw.url)
    enricher = Enricher(settings, clock=fake.clock, sleep=fake.sleep)
    with caplog.at_level(logging.INFO, logger="router.enrich"), enricher:
        results = []
        for _ in range(3):
            results.append(enricher.enrich(notification(), budget_s=5))
            fake.offset += 2  # past the cooldown: each delivery asks again
        health = enricher.health()
    assert {r.status for r in results} == {"none"}
    assert all("could not be read" in r.problems[0] for r in results), results[0].problems
    assert len(raw.calls) == 3
    assert health["outages"]["GetMonitor"]["message"]
    # No traceback per delivery: one warning line for the cause, nothing at ERROR.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert len([r for r in caplog.records if "cannot read" in r.getMessage()]) == 1


def test_an_event_answer_that_is_no_event_leaves_the_delivery_partial(raw: RawApi) -> None:
    raw.routes["/api/v1/monitor/"] = (200, MONITOR_BODY)
    raw.routes["/api/v1/events/"] = (200, ["monitor", "bank_code:0001"])
    settings = Settings(dd_api_key="k", dd_app_key="a", dd_api_host=raw.url)
    with Enricher(settings) as enricher:
        result = enricher.enrich(sns_like(), budget_s=5)
    assert result.status == "partial"
    assert result.monitor_name == "Bank API errors"
    assert result.event_tags is None
    assert any("could not be read" in problem for problem in result.problems)


# ---- rate-limit headers on every answer, ids -----------------------------------------------


def test_a_used_up_window_on_an_error_answer_is_respected(
    enricher: Enricher, stub: StubClient
) -> None:
    stub.set_rate_limit("get_event", limit=1, period_s=10)
    stub.define_event(EVENT_ID, tags=["monitor"], not_found_calls=5)
    first = enricher.enrich(sns_like(), budget_s=5)
    assert first.status == "partial"
    # That 404 said X-Ratelimit-Remaining: 0: no GetEvent until the window resets.
    assert "GetEvent" in enricher.health()["blocked"]
    second = enricher.enrich(sns_like(), budget_s=5)
    assert second.status == "partial"
    assert stub.calls_under("/api/v1/events/") == 1


def test_a_429_with_reset_0_pauses_a_second(
    enricher: Enricher, stub: StubClient, fake: FakeTime
) -> None:
    stub.add_fault(f"/api/v1/monitor/{MONITOR_ID}", status=429, reset_s=0)
    result = enricher.enrich(notification(), budget_s=5)
    assert result.status == "complete", result.problems
    assert fake.sleeps and 0.9 <= fake.sleeps[0] <= 1.0
    assert stub.calls_to(f"/api/v1/monitor/{MONITOR_ID}") == 2


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"monitor_id": "\uff14\uff12", "event_id": None}, id="fullwidth-monitor-id"),
        pytest.param({"monitor_id": "4\u00b2", "event_id": None}, id="superscript-monitor-id"),
        pytest.param({"monitor_id": None, "event_id": "\u0666\u0663"}, id="arabic-event-id"),
    ],
)
def test_ids_are_ascii_digits_only(
    enricher: Enricher, stub: StubClient, changes: dict[str, Any]
) -> None:
    result = enricher.enrich(sns_like(**changes), budget_s=5)
    assert result.status == "none"
    assert "not a" in result.problems[0] and "id" in result.problems[0], result.problems
    assert stub.calls()["total"] == 0


def test_without_id_str_the_requested_event_id_wins_over_a_rounded_number() -> None:
    # 6327818702635911562 as a double: what a JSON number passed through a float becomes.
    body = {"event": {"id": 6327818702635911000, "tags": ["monitor"]}}
    assert event_from_api(body, requested_id=EVENT_ID).event_id == EVENT_ID
    with_id_str = {"event": {"id": 6327818702635911000, "id_str": EVENT_ID}}
    assert event_from_api(with_id_str, requested_id="1").event_id == EVENT_ID
    # Only ASCII digits make an id.
    assert event_from_api({"event": {"id_str": "\uff16"}}, requested_id="6").event_id == "6"
