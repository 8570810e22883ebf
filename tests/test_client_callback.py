"""Callback signatures, the typed body (as the router renders it), and apply_callback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from breaker_client import (
    Breakers,
    CallbackEvent,
    InvalidCallbackBody,
    InvalidSignature,
    SignatureVerifier,
    apply_callback,
    parse_callback_body,
    sign_headers,
    tag_value,
    verify_callback,
    verify_signature,
)
from standardwebhooks import Webhook

from router.callback_body import build_callback_body
from router.model import Enrichment, MonitorGroup, Notification

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER_SECRET = "whsec_c2VjcmV0LW9mLXNvbWVvbmUtZWxzZQ=="
NOW = 1_700_000_000
EVENT_MS = 1_699_999_990_123


def notification(transition: str = "alert", **changes: Any) -> Notification:
    fields: dict[str, Any] = {
        "source": "datadog",
        "dedup_key": f"datadog:8123456789012345678:{transition}",
        "transition": transition,
        "datadog_transition": "Triggered" if transition == "alert" else "Recovered",
        "renotification": False,
        "title": "[Triggered on {bank_code:0001}] bank-charge 5xx rate",
        "message": "circuit-breaker-callback: https://svc/breaker/callback",
        "callback_urls": ("https://svc/breaker/callback",),
        "received_at_ms": EVENT_MS + 500,
        "event_id": "8123456789012345678",  # beyond 2^53: must stay a string
        "monitor_id": "123456",
        "event_time_ms": EVENT_MS,
        "tags": ("service:bank-charge", "env:prod"),
        "scope": "bank_code:0001, env:prod",
        "alert_cycle_key": "cycle-1",
        "link": "https://app.datadoghq.com/event/1",
        "org_id": "42",
    }
    fields.update(changes)
    return Notification(**fields)


def enrichment(*groups: tuple[str, str]) -> Enrichment:
    return Enrichment(
        status="complete",
        monitor_id="123456",
        monitor_name="bank-charge 5xx rate",
        overall_state="Alert",
        monitor_tags=("team:payments",),
        groups=tuple(
            MonitorGroup(
                name=f"bank_code:{code},env:prod",
                status=status,
                tags=(f"bank_code:{code}", "env:prod"),
                last_triggered_ms=EVENT_MS,
            )
            for code, status in groups
        ),
        event_tags=("service:bank-charge",),
        event_title="bank-charge 5xx rate",
        event_time_ms=EVENT_MS,
    )


def body_bytes(n: Notification, e: Enrichment | None = None, delivery_id: str = "d-1") -> bytes:
    return json.dumps(build_callback_body(delivery_id, n, e), separators=(",", ":")).encode()


def router_headers(body: bytes, *, webhook_id: str = "d-1", ts: int = NOW) -> dict[str, str]:
    """Signed exactly as the router does, with the standardwebhooks package."""
    stamp = datetime.fromtimestamp(ts, tz=UTC)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": Webhook(SECRET).sign(webhook_id, stamp, body.decode()),
    }


# -- signatures -------------------------------------------------------------------------------


def test_verifies_what_the_router_signs() -> None:
    body = body_bytes(notification())
    event = verify_callback(body, router_headers(body), SECRET, now=NOW + 10)
    assert event.webhook_id == "d-1" and event.delivery_id == "d-1"
    assert verify_signature(body, router_headers(body), SECRET, now=NOW) == "d-1"


def test_header_names_are_case_insensitive_and_secrets_rotate() -> None:
    body = b'{"delivery_id":"d-1","transition":"alert"}'
    headers = {k.title(): v for k, v in router_headers(body).items()}
    verifier = SignatureVerifier([OTHER_SECRET, SECRET], clock=lambda: NOW)
    assert verifier.verify(body, headers) == "d-1"


def test_sign_headers_match_the_standard() -> None:
    body = b'{"x":1}'
    headers = sign_headers(body, SECRET, webhook_id="msg_1", timestamp=NOW)
    assert headers["webhook-signature"] == Webhook(SECRET).sign(
        "msg_1", datetime.fromtimestamp(NOW, tz=UTC), body.decode()
    )
    assert verify_signature(body, headers, SECRET, now=NOW) == "msg_1"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"webhook-signature": None}, "missing header webhook-signature"),
        (
            {"webhook-id": None, "webhook-timestamp": None},
            "missing header webhook-id, webhook-timestamp",
        ),
        ({"webhook-timestamp": "yesterday"}, "must be integer Unix seconds"),
        ({"webhook-timestamp": "17000000²"}, "must be integer Unix seconds"),
        ({"webhook-timestamp": str(NOW - 301)}, "is 301s old; at most 300s"),
        ({"webhook-timestamp": str(NOW + 400)}, "is 400s in the future"),
        ({"webhook-signature": "garbage"}, "has no 'v1,' signature"),
        ({"webhook-timestamp": "9" * 400}, "must be integer Unix seconds"),
        ({"webhook-signature": "v1,not*base64"}, "not valid base64"),
        ({"webhook-signature": "v1a,c2lnbmF0dXJl"}, "has no 'v1,' signature"),
        ({"webhook-id": "d-2"}, "signature does not match"),
    ],
)
def test_rejections_say_what_was_wrong(change: dict[str, str | None], message: str) -> None:
    body = body_bytes(notification())
    headers: dict[str, str] = {}
    for name, value in {**router_headers(body), **change}.items():
        if value is not None:
            headers[name] = value
    with pytest.raises(InvalidSignature, match=message):
        verify_callback(body, headers, SECRET, now=NOW)


def test_a_changed_body_or_another_secret_fails() -> None:
    body = body_bytes(notification())
    headers = router_headers(body)
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_callback(body.replace(b"0001", b"0002"), headers, SECRET, now=NOW)
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_callback(body, headers, OTHER_SECRET, now=NOW)
    assert verify_callback(body, headers, SECRET, now=NOW - 300, tolerance_s=300)
    with pytest.raises(InvalidSignature, match="at most 10s"):
        verify_callback(body, headers, SECRET, now=NOW + 11, tolerance_s=10)


def test_a_malformed_secret_is_a_setup_error() -> None:
    with pytest.raises(ValueError, match="whsec_"):
        SignatureVerifier("whsec_%%%")


# -- the body --------------------------------------------------------------------------------


def test_body_round_trips_from_the_router_renderer() -> None:
    n = notification()
    e = enrichment(("0001", "Alert"), ("0002", "OK"))
    event = parse_callback_body(body_bytes(n, e), webhook_id="d-1")
    assert (event.schema, event.delivery_id, event.transition, event.source) == (
        1,
        "d-1",
        "alert",
        "datadog",
    )
    assert (event.datadog_transition, event.renotification) == ("Triggered", False)
    assert event.monitor.id == "123456" and event.monitor.name == "bank-charge 5xx rate"
    assert event.monitor.overall_state == "Alert" and event.monitor.tags == ("team:payments",)
    assert [(g.name, g.status, g.tags) for g in event.monitor.groups] == [
        ("bank_code:0001,env:prod", "Alert", ("bank_code:0001", "env:prod")),
        ("bank_code:0002,env:prod", "OK", ("bank_code:0002", "env:prod")),
    ]
    assert event.monitor.groups[0].last_triggered_ms == EVENT_MS
    assert event.group is not None
    assert (event.group.name, event.group.status) == ("bank_code:0001,env:prod", "Alert")
    assert event.event.id == "8123456789012345678"
    assert (event.event.time_ms, event.version) == (EVENT_MS, EVENT_MS)
    assert event.event.tags == ("service:bank-charge", "env:prod")
    assert event.scope.text == "bank_code:0001, env:prod"
    assert event.scope.tags == ("bank_code:0001", "env:prod")
    assert (event.enrichment.status, event.enrichment.complete) == ("complete", True)
    assert (event.alert_cycle_key, event.org_id) == ("cycle-1", "42")
    assert event.tag_value("bank_code") == "0001"
    assert [g.tag_value("bank_code") for g in event.groups_with_tag("bank_code")] == [
        "0001",
        "0002",
    ]
    assert event.groups_with_tag("region") == ()
    assert event.raw["delivery_id"] == "d-1"


def test_body_without_enrichment() -> None:
    event = parse_callback_body(body_bytes(notification("recovery", scope=None)))
    assert event.monitor.groups == () and event.group is None
    assert (event.enrichment.status, event.enrichment.complete) == ("none", False)
    assert event.enrichment.problems == ("not enriched",)
    assert event.tag_value("bank_code") is None
    assert event.webhook_id is None


def test_tag_value() -> None:
    assert tag_value(["env:prod", "bank_code:0001", "bank_code:0002"], "bank_code") == "0001"
    assert tag_value(["bank_code:"], "bank_code") is None
    assert tag_value(["bank_codes:1"], "bank_code") is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "must be a JSON object, got list"),
        (b'{"transition": "alert"}', "'delivery_id' must be a non-empty string"),
        (
            b'{"delivery_id": "d", "transition": "alert", "monitor": {"groups": [{"tags": "x"}]}}',
            "'monitor.groups\\[0\\].tags' must be a list of strings, got str",
        ),
        (
            b'{"delivery_id": "d", "transition": "alert", "event": {"time_ms": "1700000000000"}}',
            "'event.time_ms' must be an integer or null",
        ),
    ],
)
def test_unreadable_bodies_name_the_field(body: bytes, message: str) -> None:
    with pytest.raises(InvalidCallbackBody, match=message):
        parse_callback_body(body)


def test_unknown_fields_are_ignored() -> None:
    data = json.loads(body_bytes(notification()))
    data["added_in_schema_2"] = {"anything": True}
    data["schema"] = 2
    assert parse_callback_body(data).schema == 2


# -- apply_callback ------------------------------------------------------------------------------


@pytest.fixture
def breakers(redis_url: str, key_prefix: str) -> Iterator[Breakers]:
    b = Breakers.from_url(redis_url, prefix=key_prefix, sync=False)
    b.refresh()
    yield b
    b.stop()


def event_of(n: Notification, e: Enrichment | None = None) -> CallbackEvent:
    return parse_callback_body(body_bytes(n, e))


def test_enriched_callback_applies_the_groups_as_a_snapshot(breakers: Breakers) -> None:
    breakers.open(
        "bank-charge",
        "0009",
        reason="from before",
        version=EVENT_MS - 1000,
        source="monitor:123456 event:1 delivery:d-0",
    )
    breakers.open(
        "bank-charge", "0010", reason="latency", version=EVENT_MS - 1000, source="monitor:999 e"
    )
    e = enrichment(("0001", "Alert"), ("0002", "OK"), ("0003", "Warn"))
    results = apply_callback(breakers, event_of(notification(), e), "bank-charge", tag="bank_code")
    assert {r.key: r.new_state for r in results} == {
        "0001": "open",
        "0002": "closed",
        "0003": "closed",
        "0009": "recovering",  # this monitor's, not among its groups now: closed, ramping
    }
    assert breakers.state("bank-charge", "0010").state == "open"  # another monitor's key
    state = breakers.state("bank-charge", "0001")
    assert state.version == EVENT_MS
    assert state.reason == "alert: [Triggered on {bank_code:0001}] bank-charge 5xx rate"
    assert state.source == "monitor:123456 event:8123456789012345678 delivery:d-1"
    warn = apply_callback(
        breakers,
        event_of(notification(), e),
        "bank-charge",
        tag="bank_code",
        open_statuses={"Alert", "Warn"},
    )
    assert {r.key: r.new_state for r in warn}["0003"] == "open"


def test_unenriched_callback_drives_the_notified_group(breakers: Breakers) -> None:
    opened = apply_callback(breakers, event_of(notification()), "bank-charge", tag="bank_code")
    assert [(r.key, r.new_state) for r in opened] == [("0001", "open")]
    late = notification("recovery", event_time_ms=EVENT_MS - 1)
    assert apply_callback(breakers, event_of(late), "bank-charge", tag="bank_code")[0].outcome == (
        "stale"
    )
    recovered = notification("recovery", event_time_ms=EVENT_MS + 1)
    closed = apply_callback(breakers, event_of(recovered), "bank-charge", tag="bank_code")
    assert [(r.key, r.new_state) for r in closed] == [("0001", "recovering")]
    untagged = notification(scope="env:prod")
    assert apply_callback(breakers, event_of(untagged), "bank-charge", tag="bank_code") == []


def test_keyless_callback_follows_the_monitor(breakers: Breakers) -> None:
    assert (
        apply_callback(breakers, event_of(notification(scope=None)), "acme")[0].new_state == "open"
    )
    warn = notification("warning", scope=None, event_time_ms=EVENT_MS + 1)
    assert apply_callback(breakers, event_of(warn), "acme")[0].new_state == "recovering"
    renotify = notification("renotify", scope=None, event_time_ms=EVENT_MS + 2)
    assert apply_callback(breakers, event_of(renotify), "acme") == []
    e = Enrichment(status="complete", overall_state="Alert", groups=())
    later = notification("renotify", scope=None, event_time_ms=EVENT_MS + 3)
    assert apply_callback(breakers, event_of(later, e), "acme")[0].new_state == "open"


def test_the_notification_is_the_authority_on_its_own_group(breakers: Breakers) -> None:
    # The monitor read lags (cached, or Datadog not yet indexed): it still shows 0001 OK.
    stale_read = enrichment(("0001", "OK"), ("0002", "Alert"), ("0003", "OK"))
    results = apply_callback(
        breakers, event_of(notification(), stale_read), "bank-charge", tag="bank_code"
    )
    assert {r.key: r.new_state for r in results} == {
        "0001": "open",  # the alert says so, whatever the read shows
        "0002": "open",  # the read repairs a group whose own alert was lost
        "0003": "closed",
    }
    # And a recovery of 0001 read while the read still shows it in Alert closes it.
    lagging = enrichment(("0001", "Alert"), ("0002", "Alert"), ("0003", "OK"))
    recovered = notification("recovery", event_time_ms=EVENT_MS + 1)
    results = apply_callback(breakers, event_of(recovered, lagging), "bank-charge", tag="bank_code")
    assert {r.key: r.new_state for r in results}["0001"] == "recovering"


def test_a_keyless_breaker_stays_open_while_any_group_alerts(breakers: Breakers) -> None:
    both = enrichment(("0001", "Alert"), ("0002", "Alert"))
    assert apply_callback(breakers, event_of(notification(), both), "acme")[0].new_state == "open"
    # 0001 recovers; 0002 still alerts: the whole vendor stays refused.
    one_left = enrichment(("0001", "OK"), ("0002", "Alert"))
    recovered = notification("recovery", event_time_ms=EVENT_MS + 1)
    [result] = apply_callback(breakers, event_of(recovered, one_left), "acme")
    assert result.new_state == "open"
    # The last group recovers, though the read still lags and shows it in Alert.
    lagging = enrichment(("0001", "OK"), ("0002", "Alert"))
    last = notification("recovery", event_time_ms=EVENT_MS + 2, scope="bank_code:0002, env:prod")
    [result] = apply_callback(breakers, event_of(last, lagging), "acme")
    assert result.new_state == "recovering"


def test_a_lagging_read_cannot_undo_a_newer_alert_of_another_group(breakers: Breakers) -> None:
    # Group 0001 alerted at EVENT_MS and its breaker opened.
    apply_callback(breakers, event_of(notification()), "bank-charge", tag="bank_code")
    # 0002 alerts 2 s later; the monitor read is older than 0001's alert: 0001 shows OK,
    # resolved long ago.
    read = Enrichment(
        status="complete",
        monitor_id="123456",
        groups=(
            MonitorGroup(
                "bank_code:0001,env:prod",
                "OK",
                ("bank_code:0001", "env:prod"),
                last_resolved_ms=EVENT_MS - 60_000,
            ),
            MonitorGroup("bank_code:0002,env:prod", "OK", ("bank_code:0002", "env:prod")),
        ),
    )
    later = notification(event_time_ms=EVENT_MS + 2000, scope="bank_code:0002, env:prod")
    results = apply_callback(breakers, event_of(later, read), "bank-charge", tag="bank_code")
    assert {r.key: (r.outcome, r.new_state) for r in results}["0001"] == ("stale", "open")
    assert breakers.state("bank-charge", "0001").state == "open"
    assert breakers.state("bank-charge", "0002").state == "open"


def test_an_unreadable_signature_entry_beside_a_valid_one_is_skipped() -> None:
    data = body_bytes(notification())
    headers = sign_headers(data, SECRET, webhook_id="d-1", timestamp=NOW)
    headers["webhook-signature"] = "garbage " + headers["webhook-signature"]
    verifier = SignatureVerifier(SECRET, clock=lambda: NOW)
    assert verifier.verify(data, headers) == "d-1"


def test_a_simple_monitor_follows_its_notification_despite_a_stale_read(
    breakers: Breakers,
) -> None:
    # A simple monitor has one group, "*"; the read still shows it in Alert.
    stale = Enrichment(
        status="complete",
        monitor_id="123456",
        overall_state="Alert",
        groups=(MonitorGroup("*", "Alert", ()),),
    )
    opened = apply_callback(breakers, event_of(notification(scope=None), stale), "acme")
    assert opened[0].new_state == "open"
    recovered = notification("recovery", scope=None, event_time_ms=EVENT_MS + 1)
    [result] = apply_callback(breakers, event_of(recovered, stale), "acme")
    assert result.new_state == "recovering"


# -- the keyless breaker keeps one entry per group --------------------------------------------
# Groups A (bank 0001) and B (bank 0002) of one monitor; the enrichment reads are cached or
# lagging, so they can show a group in Alert after it recovered.

T_A, T_B = EVENT_MS, EVENT_MS + 1_000  # A alerts, then B
R_A, R_B = EVENT_MS + 5_000, EVENT_MS + 6_000  # A recovers, then B


def group(
    code: str, status: str, triggered: int | None, resolved: int | None = None
) -> MonitorGroup:
    return MonitorGroup(
        f"bank_code:{code},env:prod", status, (f"bank_code:{code}", "env:prod"), triggered, resolved
    )


def read(*groups: MonitorGroup) -> Enrichment:
    """A complete monitor read, as cached: it may lag behind the notifications."""
    return Enrichment(status="complete", monitor_id="123456", overall_state="Alert", groups=groups)


def keyless(
    breakers: Breakers, transition: str, code: str, at: int, e: Enrichment | None = None
) -> str:
    """Apply one notification about bank `code` to the keyless breaker `acme`; its state after."""
    n = notification(transition, scope=f"bank_code:{code}, env:prod", event_time_ms=at)
    apply_callback(breakers, event_of(n, e), "acme")
    return breakers.state("acme").state


BOTH_ALERTING = read(group("0001", "Alert", T_A), group("0002", "Alert", T_B))


@pytest.mark.parametrize(
    "recoveries",
    [
        pytest.param([("0001", R_A), ("0002", R_B)], id="in_order"),
        # B's (later) recovery is handled first; A's (earlier) one must not be stale for it.
        pytest.param([("0002", R_B), ("0001", R_A)], id="out_of_order"),
    ],
)
def test_keyless_recoveries_close_despite_a_read_showing_the_other_alerting(
    breakers: Breakers, recoveries: list[tuple[str, int]]
) -> None:
    assert keyless(breakers, "alert", "0001", T_A, BOTH_ALERTING) == "open"
    assert keyless(breakers, "alert", "0002", T_B, BOTH_ALERTING) == "open"
    # Both recoveries come within the read cache window: each read shows both in Alert.
    (first, first_at), (last, last_at) = recoveries
    assert keyless(breakers, "recovery", first, first_at, BOTH_ALERTING) == "open"
    assert keyless(breakers, "recovery", last, last_at, BOTH_ALERTING) == "recovering"


def test_keyless_breaker_opens_again_when_a_group_alerts_after_both_recovered(
    breakers: Breakers,
) -> None:
    keyless(breakers, "alert", "0001", T_A, BOTH_ALERTING)
    keyless(breakers, "alert", "0002", T_B, BOTH_ALERTING)
    keyless(breakers, "recovery", "0002", R_B, BOTH_ALERTING)
    assert keyless(breakers, "recovery", "0001", R_A, BOTH_ALERTING) == "recovering"
    # A alerts again; the read has not seen it yet (both OK).
    both_ok = read(group("0001", "OK", T_A, R_A), group("0002", "OK", T_B, R_B))
    assert keyless(breakers, "alert", "0001", R_B + 1_000, both_ok) == "open"
    # A late retry of B's recovery changes nothing: A still alerts.
    assert keyless(breakers, "recovery", "0002", R_B, both_ok) == "open"


def test_keyless_without_enrichment_one_recovery_does_not_close_while_another_alerts(
    breakers: Breakers,
) -> None:
    assert keyless(breakers, "alert", "0001", T_A) == "open"
    assert keyless(breakers, "alert", "0002", T_B) == "open"
    assert keyless(breakers, "recovery", "0002", R_B) == "open"  # A still alerts
    assert keyless(breakers, "recovery", "0001", R_A) == "recovering"  # older, not stale
    # A late retry of A's alert is older than A's recovery: ignored.
    assert keyless(breakers, "alert", "0001", T_A) == "recovering"


def test_keyless_group_identity_ignores_tag_order(breakers: Breakers) -> None:
    alert = notification(scope="env:prod, bank_code:0001", event_time_ms=T_A)
    apply_callback(breakers, event_of(alert), "acme")
    # The read names the group `bank_code:0001,env:prod` and still shows it in Alert.
    lagging = read(group("0001", "Alert", T_A))
    assert keyless(breakers, "recovery", "0001", R_A, lagging) == "recovering"


def test_keyless_breaker_fed_by_two_monitors_stays_open_while_either_alerts(
    breakers: Breakers,
) -> None:
    for monitor_id in ("1", "2"):
        n = notification(scope=None, monitor_id=monitor_id, event_time_ms=T_A)
        apply_callback(breakers, event_of(n), "acme")
    recovered = notification("recovery", scope=None, monitor_id="2", event_time_ms=R_A)
    apply_callback(breakers, event_of(recovered), "acme")
    assert breakers.state("acme").state == "open"  # monitor 1's "*" still alerts


def test_keyless_group_missing_from_an_older_read_still_holds_the_breaker_open(
    breakers: Breakers,
) -> None:
    # Bank 0003 alerts; the next read was cached before that group existed.
    assert keyless(breakers, "alert", "0003", T_B + 500) == "open"
    cached = read(group("0001", "OK", T_A, T_A + 100), group("0002", "Alert", T_B))
    assert keyless(breakers, "recovery", "0002", R_B, cached) == "open"


def test_keyless_group_missing_from_a_newer_read_no_longer_holds_the_breaker_open(
    breakers: Breakers,
) -> None:
    # Bank 0003 alerts, then disappears from the monitor (its query changed) without a
    # recovery. A read that saw changes after 0003's alert, and no 0003, proves it gone.
    assert keyless(breakers, "alert", "0003", T_A) == "open"
    newer = read(group("0001", "Alert", R_A), group("0002", "OK", T_B, R_A))
    assert keyless(breakers, "alert", "0001", R_A, newer) == "open"
    after = read(group("0001", "OK", R_A, R_B), group("0002", "OK", T_B, R_A))
    assert keyless(breakers, "recovery", "0001", R_B, after) == "recovering"
    # Its entry keeps the time it was last seen, so a late retry of its alert is stale.
    assert keyless(breakers, "alert", "0003", T_A) == "recovering"
