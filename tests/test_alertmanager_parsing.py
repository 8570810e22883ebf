"""Alertmanager and Grafana webhook payloads to Notifications: pure parsing, real shapes."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta

import pytest

from router.errors import PayloadError
from router.model import Notification
from router.parsing.alertmanager import parse_alertmanager_webhook
from tests.alertmanager_payloads import (
    ALERTMANAGER_SAMPLE,
    GRAFANA_SAMPLE,
    am_webhook,
    bank_alert,
    grafana_sample,
)

KEYWORD = "circuit-breaker-callback"
ANNOTATION = "circuit_breaker_callback"
CALLBACK = "https://bank-charge.internal/breaker/callback"
RECEIVED_MS = 1_795_350_100_000  # 2026-11-18T21:41:40Z, after every time below


def parse(payload, *, annotation=ANNOTATION, received_at_ms=RECEIVED_MS):
    return parse_alertmanager_webhook(
        payload, keyword=KEYWORD, annotation=annotation, received_at_ms=received_at_ms
    )


def ms(text: str) -> int:
    return (datetime.fromisoformat(text) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
        milliseconds=1
    )


def test_the_alertmanager_sample_is_one_alert_notification():
    parsed = parse(ALERTMANAGER_SAMPLE)
    assert parsed.sender == "alertmanager"
    [n] = parsed.notifications
    assert n.source == "alertmanager"
    assert n.transition == "alert" and n.datadog_transition == "firing"
    assert n.event_time_ms == ms("2023-02-06T13:08:45.828+00:00")
    assert n.event_id == "1a30ba71cca2921f"
    assert "alertname:ProbeFailure" in n.tags and "severity:critical" in n.tags
    assert n.title == "[FIRING] ProbeFailure: BlackBox Probe Failure: https://server.example.org"
    assert n.link.startswith("http://prometheus.example.org:9090/graph")
    assert n.callback_urls == ()  # the sample names no callback
    assert parsed.warnings == ()
    # The payload carries every alert of the group: the callback needs no Datadog read.
    assert n.carried is not None and n.carried.status == "complete"
    [group] = n.carried.groups
    assert group.status == "Alert" and "instance:https://server.example.org" in group.tags
    assert n.scope == group.name


def test_the_callback_comes_from_the_annotation():
    [n] = parse(am_webhook(bank_alert("0001", CALLBACK))).notifications
    assert n.callback_urls == (CALLBACK,)
    assert f"{KEYWORD}: {CALLBACK}" in n.message  # what the 202 and the service see


def test_the_annotation_name_is_configurable():
    payload = am_webhook(bank_alert("0001", CALLBACK, annotation="breaker_url"))
    assert parse(payload).notifications[0].callback_urls == ()
    assert parse(payload, annotation="breaker_url").notifications[0].callback_urls == (CALLBACK,)


def test_the_callback_may_be_a_keyword_line_in_the_description():
    alert = bank_alert("0001", None)
    alert["annotations"]["description"] = f"Bank errors.\n{KEYWORD}: {CALLBACK}\nSee the runbook."
    [n] = parse(am_webhook(alert)).notifications
    assert n.callback_urls == (CALLBACK,)


def test_the_same_url_in_annotation_and_description_is_one_delivery():
    alert = bank_alert("0001", CALLBACK)
    alert["annotations"]["summary"] = f"{KEYWORD}: {CALLBACK}"
    assert parse(am_webhook(alert)).notifications[0].callback_urls == (CALLBACK,)


def test_a_callback_in_common_annotations_applies_to_every_alert():
    payload = am_webhook(bank_alert("0001", None), bank_alert("0002", None))
    payload["commonAnnotations"] = {ANNOTATION: CALLBACK}
    assert [n.callback_urls for n in parse(payload).notifications] == [(CALLBACK,), (CALLBACK,)]


def test_each_alert_is_its_own_group_and_carries_the_whole_group():
    payload = am_webhook(
        bank_alert("0001", CALLBACK),
        bank_alert("0002", CALLBACK, status="resolved", ends_at="2026-11-18T21:41:00Z"),
    )
    first, second = parse(payload).notifications
    assert (first.transition, second.transition) == ("alert", "recovery")
    assert first.monitor_id == second.monitor_id  # the group is the "monitor"
    assert "bank_code:0001" in first.scope_tags and "bank_code:0002" in second.scope_tags
    statuses = {g.name: g.status for g in first.carried.groups}
    assert statuses == {first.scope: "Alert", second.scope: "OK"}
    [resolved] = [g for g in first.carried.groups if g.status == "OK"]
    assert resolved.last_resolved_ms == ms("2026-11-18T21:41:00+00:00")
    assert first.carried.overall_state == "Alert"
    assert first.carried.monitor_name == "BankChargeErrors"


def test_only_alerts_sent_to_the_same_callbacks_share_a_group():
    other = "https://fx.internal/breaker/callback"
    payload = am_webhook(
        bank_alert("0001", CALLBACK), bank_alert("0002", None), bank_alert("0003", other)
    )
    first, _none, third = parse(payload).notifications
    # An alert naming another callback, or none, must not drive (or be closed by) this one.
    assert [g.tags for g in first.carried.groups] == [first.tags]
    assert [g.tags for g in third.carried.groups] == [third.tags]
    assert first.monitor_id != third.monitor_id


def test_resolved_means_recovery_at_ends_at():
    alert = bank_alert("0001", CALLBACK, status="resolved", ends_at="2026-11-18T21:41:00.5Z")
    [n] = parse(am_webhook(alert)).notifications
    assert n.transition == "recovery" and n.datadog_transition == "resolved"
    assert n.event_time_ms == ms("2026-11-18T21:41:00.500+00:00")
    assert n.carried.overall_state == "OK"


def test_nanosecond_timestamps_are_read_to_the_millisecond():
    [n] = parse(am_webhook(bank_alert("0001", CALLBACK))).notifications
    assert n.event_time_ms == ms("2026-11-18T21:40:00.123+00:00")


def test_resends_while_firing_share_one_dedup_key():
    first = parse(am_webhook(bank_alert("0001", CALLBACK))).notifications[0]
    # repeat_interval resend: a new sibling joined, Prometheus moved endsAt forward.
    again = bank_alert("0001", CALLBACK, ends_at="2026-11-18T21:44:00Z")
    resent = parse(am_webhook(again, bank_alert("0002", CALLBACK))).notifications[0]
    assert resent.dedup_key == first.dedup_key


def test_each_edge_of_an_alert_has_its_own_dedup_key():
    firing = parse(am_webhook(bank_alert("0001", CALLBACK))).notifications[0]
    resolved = parse(
        am_webhook(bank_alert("0001", CALLBACK, status="resolved", ends_at="2026-11-18T21:41Z"))
    ).notifications[0]
    refired = parse(
        am_webhook(bank_alert("0001", CALLBACK, starts_at="2026-11-18T21:42:00Z"))
    ).notifications[0]
    assert len({firing.dedup_key, resolved.dedup_key, refired.dedup_key}) == 3


def test_grafana_sample_each_alert_one_notification():
    parsed = parse(grafana_sample(CALLBACK))
    assert parsed.sender == "grafana"
    assert parsed.warnings == ()
    assert [n.callback_urls for n in parsed.notifications] == [(CALLBACK,), (CALLBACK,)]
    assert {n.org_id for n in parsed.notifications} == {"1"}
    assert [n.event_id for n in parsed.notifications] == ["c6eadffa33fcdf37", "bc97ff14869b13e3"]
    assert len(parsed.notifications[0].carried.groups) == 2


def test_grafana_orgs_sharing_a_group_key_are_different_monitors():
    other_org = grafana_sample(CALLBACK)
    other_org["orgId"] = 2
    assert (
        parse(grafana_sample(CALLBACK)).notifications[0].monitor_id
        != parse(other_org).notifications[0].monitor_id
    )


def test_a_notification_survives_the_queue_round_trip():
    [n] = parse(am_webhook(bank_alert("0001", CALLBACK))).notifications
    stored = json.loads(json.dumps(n.to_dict()))
    assert Notification.from_dict(stored) == n


def test_truncated_alerts_make_the_group_partial():
    payload = am_webhook(bank_alert("0001", CALLBACK))
    payload["truncatedAlerts"] = 3
    parsed = parse(payload)
    [n] = parsed.notifications
    assert n.carried.status == "partial"
    assert "left 3 alerts of the group out" in n.carried.problems[0]
    assert any("max_alerts" in w for w in parsed.warnings)


# ---- failure paths ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload, expected",
    [
        ({"status": "firing"}, "field 'alerts': expected a list of alerts, got no 'alerts' field"),
        ({"alerts": "x"}, "field 'alerts': expected a list of alerts, got \"x\""),
        ({"alerts": [1, "x"]}, "no usable alert"),
        ({"alerts": [{"labels": {"a": "b"}}]}, "no usable alert"),
    ],
)
def test_unusable_payloads_are_refused_naming_the_field(payload, expected):
    with pytest.raises(PayloadError) as raised:
        parse(payload)
    assert raised.value.status == 422
    assert expected in str(raised.value)


def test_no_alerts_is_an_empty_answer_not_an_error():
    payload = am_webhook(bank_alert("0001", CALLBACK))
    payload["alerts"] = []
    assert parse(payload).notifications == ()


def test_an_unusable_alert_is_skipped_and_named_the_others_parsed():
    payload = am_webhook(bank_alert("0001", CALLBACK))
    payload["alerts"].insert(0, {"status": "pending", "labels": {"alertname": "X"}})
    parsed = parse(payload)
    [n] = parsed.notifications
    assert "bank_code:0001" in n.scope_tags
    assert parsed.warnings == (
        'alerts[0]: field \'status\': expected "firing" or "resolved", got "pending"; '
        "alert ignored",
    )


def test_an_alert_without_status_follows_the_group_status():
    payload = am_webhook(bank_alert("0001", CALLBACK))
    del payload["alerts"][0]["status"]
    [n] = parse(payload).notifications
    assert n.transition == "alert"


@pytest.mark.parametrize(
    "field, value, warning",
    [
        ("annotations", "x", "alerts[0]: field 'annotations': expected an object, got \"x\""),
        ("startsAt", "yesterday", "alerts[0]: field 'startsAt': expected an RFC 3339 time"),
        ("startsAt", "2999-01-01T00:00:00Z", "is in the future"),
        ("fingerprint", 12, "alerts[0]: field 'fingerprint': expected a string, got 12"),
        ("generatorURL", ["u"], "alerts[0]: field 'generatorURL': expected a string"),
    ],
)
def test_a_malformed_optional_field_is_ignored_and_named(field, value, warning):
    alert = bank_alert("0001", CALLBACK)
    alert[field] = value
    parsed = parse(am_webhook(alert))
    [n] = parsed.notifications
    assert any(warning in w for w in parsed.warnings), parsed.warnings
    assert n.warnings == parsed.warnings
    assert n.transition == "alert"


def test_a_firing_alert_without_a_start_time_still_dedups_its_resends():
    def without_start(ends_at: str) -> dict:
        alert = bank_alert("0001", CALLBACK, ends_at=ends_at)
        del alert["startsAt"]
        return am_webhook(alert)

    first = parse(without_start("2026-11-18T21:44:00Z")).notifications[0]
    again = parse(without_start("2026-11-18T21:48:00Z")).notifications[0]
    assert first.event_time_ms is None
    assert first.dedup_key == again.dedup_key


def test_label_values_that_are_not_strings_are_ignored_and_named():
    alert = bank_alert("0001", CALLBACK)
    alert["labels"]["replica"] = 2
    parsed = parse(am_webhook(alert))
    assert "replica:2" not in parsed.notifications[0].tags
    assert "alerts[0]: field 'labels.replica': expected a string, got 2; ignored" in (
        parsed.warnings
    )


def test_an_unknown_version_is_a_warning():
    payload = copy.deepcopy(ALERTMANAGER_SAMPLE)
    payload["version"] = "5"
    parsed = parse(payload)
    assert len(parsed.notifications) == 1
    assert parsed.warnings == (
        'field \'version\': expected "4" (Alertmanager) or "1" (Grafana), got "5"; '
        "read as version 4",
    )


def test_a_missing_group_key_is_named_and_the_group_labels_stand_in():
    payload = am_webhook(bank_alert("0001", CALLBACK))
    del payload["groupKey"]
    parsed = parse(payload)
    assert parsed.notifications[0].monitor_id is not None
    assert any("field 'groupKey'" in w for w in parsed.warnings)


def test_grafana_top_level_fields_are_not_needed():
    payload = copy.deepcopy(GRAFANA_SAMPLE)
    for name in ("title", "state", "message", "orgId"):
        del payload[name]
    assert len(parse(payload).notifications) == 2
