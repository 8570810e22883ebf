"""Datadog Webhooks integration payloads to Notifications (router.parsing.datadog)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from router.errors import PayloadError
from router.model import Notification
from router.parsing.datadog import parse_datadog_webhook
from tests import payloads
from tests.test_callbacks import CB, TRIGGERED_BODY

KEYWORD = "circuit-breaker-callback"
RECEIVED = 1_700_000_000_123

EVENT_TAGS = (
    "availability-zone:us-west-1a,host:i-3b93aafb,image:ami-9f305fff,instance-type:c3.large,"
    "kernel:none,monitor,org:6585,region:us-west-1,role:dock,security-group:sg-59a3503c,"
    "security-group:sg-cb8e7dae"
)

# The real 2015 capture's own template: event_id=$ID, event_tags=$TAGS, no $ALERT_ID.
CAPTURED: dict[str, Any] = {
    "alert_transition": "Triggered",
    "body": TRIGGERED_BODY,
    "date": "1448435530000",
    "event_id": "3089904566766935419",
    "event_tags": EVENT_TAGS,
    "event_type": "metric_alert_monitor",
    "link": "https://app.datadoghq.com/event/event?id=3089904566766935419",
    "secret": "I_solemnly_swear_that_I_am_up_to_no_good",
    "title": "[Triggered on {host:i-3b93aafb}] Dock is almost out of memory...",
}

# The integration's default payload, rendered.
DEFAULT: dict[str, Any] = {
    "body": TRIGGERED_BODY,
    "last_updated": "1448435530000",
    "event_type": "query_alert_monitor",
    "title": "[Triggered on {host:i-3b93aafb}] Dock is almost out of memory...",
    "date": "1448435530000",
    "org": {"id": "6585", "name": "Runnable"},
    "id": "3089904566766935419",
}

# Our recommended custom payload, rendered.
RECOMMENDED: dict[str, Any] = {
    "id": "7345023619263187422",
    "alert_id": "155844758",
    "alert_transition": "Re-Triggered",
    "alert_type": "error",
    "alert_cycle_key": "7345011207331812113",
    "alert_scope": "bank_code:0001,env:prod",
    "title": "[P1] [Re-Triggered on {bank_code:0001,env:prod}] Bank API errors",
    "body": f"%%%\nBank 0001 errors @webhook-breaker-router\ncircuit-breaker-callback: {CB}\n%%%",
    "date": "1700000000000",
    "tags": "monitor, bank_code:0001, env:prod, team:payments",
    "link": "https://app.datadoghq.com/event/jump_to?event_id=7345023619263187422",
    "org_id": "11023",
    "event_type": "query_alert_monitor",
}


def parse(payload: dict[str, Any], keyword: str = KEYWORD) -> Notification:
    return parse_datadog_webhook(payload, keyword=keyword, received_at_ms=RECEIVED)


def test_real_capture_with_hand_written_aliases() -> None:
    assert parse(CAPTURED) == Notification(
        source="datadog",
        dedup_key="datadog:3089904566766935419:alert",
        transition="alert",
        datadog_transition="Triggered",
        renotification=False,
        title="[Triggered on {host:i-3b93aafb}] Dock is almost out of memory...",
        message=TRIGGERED_BODY,
        callback_urls=(CB,),
        received_at_ms=RECEIVED,
        event_id="3089904566766935419",
        monitor_id="309811",
        event_time_ms=1448435530000,
        tags=tuple(EVENT_TAGS.split(",")),
        scope="host:i-3b93aafb",
        link="https://app.datadoghq.com/event/event?id=3089904566766935419",
        event_type="metric_alert_monitor",
    )


def test_default_payload_takes_monitor_id_from_links_and_transition_from_title() -> None:
    assert parse(DEFAULT) == Notification(
        source="datadog",
        dedup_key="datadog:3089904566766935419:alert",
        transition="alert",
        datadog_transition="Triggered",
        renotification=False,
        title="[Triggered on {host:i-3b93aafb}] Dock is almost out of memory...",
        message=TRIGGERED_BODY,
        callback_urls=(CB,),
        received_at_ms=RECEIVED,
        event_id="3089904566766935419",
        monitor_id="309811",
        event_time_ms=1448435530000,
        scope="host:i-3b93aafb",
        org_id="6585",
        event_type="query_alert_monitor",
    )


def test_recommended_payload() -> None:
    assert parse(RECOMMENDED) == Notification(
        source="datadog",
        dedup_key="datadog:7345023619263187422:alert",
        transition="alert",
        datadog_transition="Re-Triggered",
        renotification=True,
        title="[P1] [Re-Triggered on {bank_code:0001,env:prod}] Bank API errors",
        message=RECOMMENDED["body"],
        callback_urls=(CB,),
        received_at_ms=RECEIVED,
        event_id="7345023619263187422",
        monitor_id="155844758",
        event_time_ms=1700000000000,
        tags=("monitor", "bank_code:0001", "env:prod", "team:payments"),
        scope="bank_code:0001,env:prod",
        alert_cycle_key="7345011207331812113",
        link="https://app.datadoghq.com/event/jump_to?event_id=7345023619263187422",
        org_id="11023",
        alert_type="error",
        event_type="query_alert_monitor",
    )


def test_notification_survives_the_queue_round_trip() -> None:
    notification = parse(RECOMMENDED)
    assert Notification.from_dict(json.loads(json.dumps(notification.to_dict()))) == notification


@pytest.mark.parametrize(
    ("alert_transition", "expected"),
    [
        pytest.param("Triggered", ("alert", "Triggered", False), id="triggered"),
        pytest.param("Re-Triggered", ("alert", "Re-Triggered", True), id="re-triggered"),
        pytest.param("Warn", ("warning", "Warn", False), id="warn"),
        pytest.param("Re-Warn", ("warning", "Re-Warn", True), id="re-warn"),
        pytest.param("Recovered", ("recovery", "Recovered", False), id="recovered"),
        pytest.param("No Data", ("no_data", "No Data", False), id="no-data"),
        pytest.param("Re-No Data", ("no_data", "Re-No Data", True), id="re-no-data"),
        pytest.param("Renotify", ("renotify", "Renotify", True), id="renotify"),
        pytest.param(" no   data ", ("no_data", "no data", False), id="spacing-and-case"),
    ],
)
def test_alert_transition_values(alert_transition: str, expected: tuple[str, str, bool]) -> None:
    payload = {**RECOMMENDED, "alert_transition": alert_transition, "title": "Bank API errors"}
    notification = parse(payload)
    assert (
        notification.transition,
        notification.datadog_transition,
        notification.renotification,
    ) == expected
    assert notification.dedup_key == f"datadog:7345023619263187422:{expected[0]}"


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        pytest.param(
            "[Triggered on {host:i-3b93aafb}] Dock is almost out of memory...",
            ("alert", "Triggered", False, "host:i-3b93aafb"),
            id="triggered-on-scope",
        ),
        pytest.param(
            "[P1] [Recovered on {bank_code:0001,env:prod}] Bank API errors",
            ("recovery", "Recovered", False, "bank_code:0001,env:prod"),
            id="priority-then-recovered",
        ),
        pytest.param("[Warn] CPU Load", ("warning", "Warn", False, None), id="warn-no-scope"),
        pytest.param(
            "[Re-Triggered on {bank_code:0002}] Bank API errors",
            ("alert", "Re-Triggered", True, "bank_code:0002"),
            id="re-triggered",
        ),
        pytest.param(
            "[No Data on {host:a}] Heartbeat", ("no_data", "No Data", False, "host:a"), id="no-data"
        ),
    ],
)
def test_transition_and_scope_from_title(
    title: str, expected: tuple[str, str, bool, str | None]
) -> None:
    payload = {**DEFAULT, "title": title}
    notification = parse(payload)
    assert (
        notification.transition,
        notification.datadog_transition,
        notification.renotification,
        notification.scope,
    ) == expected


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param(
            {"alert_transition": "Recovered"},
            ("recovery", "Recovered", "bank_code:0001,env:prod"),
            id="alert-transition-wins-over-title",
        ),
        pytest.param(
            {"alert_transition": "Null"},
            ("alert", "Re-Triggered", "bank_code:0001,env:prod"),
            id="unknown-name-falls-back-to-title",
        ),
        pytest.param(
            {"alert_transition": "$ALERT_TRANSITION"},
            ("alert", "Re-Triggered", "bank_code:0001,env:prod"),
            id="unfilled-falls-back-to-title",
        ),
        pytest.param(
            {"alert_scope": ""},
            ("alert", "Re-Triggered", "bank_code:0001,env:prod"),
            id="scope-from-title-when-empty",
        ),
        pytest.param(
            {"alert_scope": "bank_code:0009", "title": "Bank API errors"},
            ("alert", "Re-Triggered", "bank_code:0009"),
            id="alert-scope-wins",
        ),
        pytest.param(
            {"alert_scope": None, "scope": "bank_code:0007"},
            ("alert", "Re-Triggered", "bank_code:0007"),
            id="scope-alias",
        ),
        pytest.param(
            {"alert_transition": None, "transition": "Warn"},
            ("warning", "Warn", "bank_code:0001,env:prod"),
            id="transition-alias",
        ),
    ],
)
def test_transition_and_scope_precedence(
    changes: dict[str, Any], expected: tuple[str, str, str | None]
) -> None:
    payload = {k: v for k, v in {**RECOMMENDED, **changes}.items() if v is not None}
    notification = parse(payload)
    assert (notification.transition, notification.datadog_transition, notification.scope) == (
        expected
    )


@pytest.mark.parametrize(
    ("changes", "field", "expected"),
    [
        pytest.param({"date": "1448435530"}, "event_time_ms", 1448435530000, id="date-seconds"),
        pytest.param({"date": "1448435530.25"}, "event_time_ms", 1448435530250, id="date-frac-s"),
        pytest.param({"date": 1448435530000}, "event_time_ms", 1448435530000, id="date-int"),
        pytest.param({"date": " 1448435530000 "}, "event_time_ms", 1448435530000, id="date-pad"),
        pytest.param({"date": "$DATE"}, "event_time_ms", None, id="date-unfilled"),
        pytest.param({"id": 2**63 - 1}, "event_id", "9223372036854775807", id="id-int-exact"),
        pytest.param({"id": "$ID"}, "event_id", "7345023619263187422", id="id-from-link"),
        pytest.param({"id": "", "link": ""}, "event_id", None, id="no-event-id"),
        pytest.param(
            {"id": None, "event_id": "3089904566766935419"},
            "event_id",
            "3089904566766935419",
            id="event-id-alias",
        ),
        pytest.param(
            {
                "id": "$ID",
                "link": "$LINK",
                "body": "see https://app.datadoghq.com/event/event?id=42",
            },
            "event_id",
            None,
            id="no-event-id-from-body",
        ),
        pytest.param(
            {"id": None, "link": "https://app.datadoghq.com/event/event?id=abc_DEF-1"},
            "event_id",
            "abc_DEF-1",
            id="token-id-from-link",
        ),
        pytest.param({"id": "a" * 64}, "event_id", "a" * 64, id="id-64-chars"),
        pytest.param({"id": " 42 "}, "event_id", "42", id="id-padded"),
        pytest.param({"alert_id": "1" * 20}, "monitor_id", "1" * 20, id="alert-id-20-digits"),
        pytest.param(
            {"date": str(RECEIVED + 86_400_000)},
            "event_time_ms",
            RECEIVED + 86_400_000,
            id="date-a-day-ahead",
        ),
        pytest.param({"date": "0"}, "event_time_ms", 0, id="date-epoch"),
        pytest.param({"alert_id": 155844758}, "monitor_id", "155844758", id="alert-id-int"),
        pytest.param(
            {"alert_id": "$ALERT_ID", "body": TRIGGERED_BODY}, "monitor_id", "309811", id="links"
        ),
        pytest.param(
            {"alert_id": None, "monitor_id": "77"}, "monitor_id", "77", id="monitor-alias"
        ),
        pytest.param({"alert_id": ""}, "monitor_id", None, id="no-monitor-id"),
        pytest.param(
            {"tags": ["env:prod", " bank_code:0001 ", ""]},
            "tags",
            ("env:prod", "bank_code:0001"),
            id="tags-list",
        ),
        pytest.param({"tags": "a:b,c"}, "tags", ("a:b", "c"), id="tags-no-spaces"),
        pytest.param({"tags": "$TAGS"}, "tags", (), id="tags-unfilled"),
        pytest.param({"org_id": 11023}, "org_id", "11023", id="org-id-int"),
        pytest.param({"org_id": "$ORG_ID"}, "org_id", None, id="org-id-unfilled"),
        pytest.param({"alert_cycle_key": "$ALERT_CYCLE_KEY"}, "alert_cycle_key", None, id="cycle"),
        pytest.param({"alert_type": "  "}, "alert_type", None, id="blank-is-absent"),
        pytest.param({"link": "$LINK"}, "link", None, id="link-unfilled"),
    ],
)
def test_field_values(changes: dict[str, Any], field: str, expected: object) -> None:
    payload = {k: v for k, v in {**RECOMMENDED, **changes}.items() if v is not None}
    assert getattr(parse(payload), field) == expected


@pytest.mark.parametrize(
    ("org", "expected"),
    [
        pytest.param({"id": 6585, "name": "Runnable"}, "6585", id="int"),
        pytest.param({"id": "$ORG_ID", "name": "$ORG_NAME"}, None, id="unfilled"),
        pytest.param({"name": "Runnable"}, None, id="no-id"),
    ],
)
def test_default_payload_org_id(org: dict[str, Any], expected: str | None) -> None:
    assert parse({**DEFAULT, "org": org}).org_id == expected


@pytest.mark.parametrize(
    ("body_key", "extra"),
    [
        pytest.param("text_only_msg", {}, id="text-only-msg"),
        pytest.param("message", {}, id="message"),
        pytest.param("event_msg", {}, id="event-msg"),
        pytest.param("text_only_msg", {"body": "$EVENT_MSG"}, id="unfilled-body-falls-through"),
    ],
)
def test_body_aliases(body_key: str, extra: dict[str, Any]) -> None:
    payload = {k: v for k, v in RECOMMENDED.items() if k != "body"}
    payload |= {body_key: f"circuit-breaker-callback: {CB}", **extra}
    notification = parse(payload)
    assert notification.callback_urls == (CB,)
    assert notification.message == f"circuit-breaker-callback: {CB}"


def test_body_wins_over_text_only_msg() -> None:
    payload = {**RECOMMENDED, "text_only_msg": "circuit-breaker-callback: https://other.example/cb"}
    assert parse(payload).callback_urls == (CB,)


def test_configured_keyword_is_used() -> None:
    payload = {**RECOMMENDED, "body": "breaker-hook: https://a.example/cb\n" + RECOMMENDED["body"]}
    assert parse(payload, keyword="breaker-hook").callback_urls == ("https://a.example/cb",)


def test_body_without_callback_line_parses_with_no_urls() -> None:
    notification = parse({**DEFAULT, "body": "%%%\nDisk is full @webhook-router\n%%%"})
    assert notification.callback_urls == ()
    assert notification.monitor_id is None


def test_dedup_key_without_event_id_is_a_digest_of_the_payload() -> None:
    payload = {k: v for k, v in RECOMMENDED.items() if k not in ("id", "link")}
    same_keys_reordered = dict(reversed(list(payload.items())))
    key = parse(payload).dedup_key
    assert key.startswith("datadog:sha256:")
    assert len(key) == len("datadog:sha256:") + 64
    assert parse(same_keys_reordered).dedup_key == key
    assert parse({**payload, "date": "1700000000001"}).dedup_key != key


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param(
            {"body": None},
            "field 'body': expected the monitor message ($EVENT_MSG), got no 'body' / 'event_msg'"
            " / 'event.msg' / 'event.body' / 'event.message' / 'event.text' / 'text_only_msg' / "
            "'event.text_only_msg' / 'message' / 'text' field",
            id="body-missing",
        ),
        pytest.param(
            {"body": "$EVENT_MSG"},
            "field 'body': expected the monitor message ($EVENT_MSG), got \"$EVENT_MSG\" in 'body'",
            id="body-unfilled",
        ),
        pytest.param(
            {"body": "  "},
            "field 'body': expected the monitor message ($EVENT_MSG), got \"  \" in 'body'",
            id="body-blank",
        ),
        pytest.param(
            {"body": {"text": "x"}},
            "field 'body': expected the monitor message ($EVENT_MSG), got an object in 'body'",
            id="body-object",
        ),
        pytest.param(
            {"alert_transition": "Exploded", "title": "Bank API errors"},
            "field 'alert_transition': expected a Datadog $ALERT_TRANSITION (\"Triggered\", "
            '"Re-Triggered", "Warn", "Re-Warn", "Recovered", "No Data", "Re-No Data", '
            '"Renotify") or a title that starts with one in brackets, like "[Triggered on '
            '{host:a}] ...", got "Exploded" and title "Bank API errors"',
            id="unknown-transition-and-title",
        ),
        pytest.param(
            {"alert_transition": None, "title": "[P1] Bank API errors"},
            "field 'title': expected a Datadog $ALERT_TRANSITION (\"Triggered\", "
            '"Re-Triggered", "Warn", "Re-Warn", "Recovered", "No Data", "Re-No Data", '
            '"Renotify") or a title that starts with one in brackets, like "[Triggered on '
            '{host:a}] ...", got no transition field and title "[P1] Bank API errors"',
            id="no-transition-anywhere",
        ),
    ],
)
def test_payload_errors(changes: dict[str, Any], message: str) -> None:
    payload = {k: v for k, v in {**RECOMMENDED, **changes}.items() if v is not None}
    if "org" in changes:
        payload.pop("org_id")
    with pytest.raises(PayloadError) as caught:
        parse(payload)
    assert str(caught.value) == message
    assert caught.value.status == 422


# Once refused with a 422 (a lost alert, since Datadog does not retry a 4xx): now ignored and
# named, with the same words.
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param(
            {"title": ["a"]}, "field 'title': expected a string, got an array", id="title-array"
        ),
        pytest.param(
            {"alert_transition": True},
            "field 'alert_transition': expected a string, got true",
            id="transition-bool",
        ),
        pytest.param(
            {"alert_scope": 5}, "field 'alert_scope': expected a string, got 5", id="scope-int"
        ),
        pytest.param(
            {"date": "yesterday"},
            "field 'date': expected epoch milliseconds as a string, got \"yesterday\"",
            id="date-not-a-number",
        ),
        pytest.param(
            {"date": "-1448435530000"},
            "field 'date': expected epoch milliseconds as a string, got \"-1448435530000\"",
            id="date-negative",
        ),
        pytest.param(
            {"id": 7.345023619263187e18},
            "field 'id': expected a string or an integer, got 7.345023619263187e+18",
            id="id-float-would-lose-digits",
        ),
        pytest.param(
            {"alert_id": "monitor-1"},
            "field 'alert_id': expected the monitor id ($ALERT_ID, at most 20 digits), "
            'got "monitor-1"',
            id="alert-id-not-digits",
        ),
        pytest.param(
            {"alert_id": "1" * 21},
            "field 'alert_id': expected the monitor id ($ALERT_ID, at most 20 digits), "
            f'got "{"1" * 21}"',
            id="alert-id-21-digits",
        ),
        pytest.param(
            {"alert_id": "\u0661\u0662\u0663"},
            "field 'alert_id': expected the monitor id ($ALERT_ID, at most 20 digits), "
            'got "\u0661\u0662\u0663"',
            id="alert-id-arabic-indic-digits",
        ),
        pytest.param(
            {"date": "\u0661\u0664\u0664\u0668\u0664\u0663\u0665\u0665\u0663\u0660"},
            "field 'date': expected epoch milliseconds as a string, got "
            '"\u0661\u0664\u0664\u0668\u0664\u0663\u0665\u0665\u0663\u0660"',
            id="date-arabic-indic-digits",
        ),
        pytest.param(
            {"date": "\uff11\uff14\uff14\uff18\uff14\uff13\uff15\uff15\uff13\uff10"},
            "field 'date': expected epoch milliseconds as a string, got "
            '"\uff11\uff14\uff14\uff18\uff14\uff13\uff15\uff15\uff13\uff10"',
            id="date-fullwidth-digits",
        ),
        pytest.param(
            {"date": "95617584000000"},
            "field 'date': \"95617584000000\" is in the future (more than a day after the router "
            "received it at 2023-11-14T22:13:20+00:00)",
            id="date-year-5000",
        ),
        pytest.param(
            {"date": "300000000000000"},
            "field 'date': \"300000000000000\" is in the future (more than a day after the "
            "router received it at 2023-11-14T22:13:20+00:00)",
            id="date-past-year-9999",
        ),
        pytest.param(
            {"date": "9" * 30},
            f"field 'date': \"{'9' * 30}\" is in the future (more than a day after the router "
            "received it at 2023-11-14T22:13:20+00:00)",
            id="date-30-nines",
        ),
        pytest.param(
            {"date": "99999999999.5"},
            "field 'date': \"99999999999.5\" is in the future (more than a day after the router "
            "received it at 2023-11-14T22:13:20+00:00)",
            id="date-seconds-year-5138",
        ),
        pytest.param(
            {"date": str(RECEIVED + 86_400_001)},
            f"field 'date': \"{RECEIVED + 86_400_001}\" is in the future (more than a day after "
            "the router received it at 2023-11-14T22:13:20+00:00)",
            id="date-just-over-a-day-ahead",
        ),
        pytest.param(
            {"date": 10**40},
            "field 'date': expected epoch milliseconds as a string, got \"1" + "0" * 40 + '"',
            id="date-int-too-long",
        ),
        pytest.param(
            {"id": "12\n34"},
            "field 'id': expected a Datadog event id ($ID: at most 64 letters, digits, '_' or "
            "'-'), got \"12\\n34\"",
            id="id-newline",
        ),
        pytest.param(
            {"id": "12\x0034"},
            "field 'id': expected a Datadog event id ($ID: at most 64 letters, digits, '_' or "
            "'-'), got \"12\\u000034\"",
            id="id-nul",
        ),
        pytest.param(
            {"id": "9" * 5000},
            "field 'id': expected a Datadog event id ($ID: at most 64 letters, digits, '_' or "
            "'-'), got \"" + "9" * 78 + "\u2026",
            id="id-5000-digits",
        ),
        pytest.param(
            {"id": "a" * 65},
            "field 'id': expected a Datadog event id ($ID: at most 64 letters, digits, '_' or "
            "'-'), got \"" + "a" * 65 + '"',
            id="id-65-chars",
        ),
        pytest.param(
            {"id": None, "event_id": "1 2"},
            "field 'event_id': expected a Datadog event id ($ID: at most 64 letters, digits, "
            "'_' or '-'), got \"1 2\"",
            id="event-id-alias-with-space",
        ),
        pytest.param(
            {"id": "$ID", "link": "https://app.datadoghq.com/event/event?id=12%0A34"},
            "field 'link': expected a Datadog event id ($ID: at most 64 letters, digits, '_' or "
            "'-') in the event link, got \"12\\n34\" in "
            '"https://app.datadoghq.com/event/event?id=12%0A34"',
            id="link-id-encoded-newline",
        ),
        pytest.param(
            {"tags": ["env:prod", 3]},
            "field 'tags': expected comma-separated tags ($TAGS) or a list of strings, "
            "got 3 among them",
            id="tags-list-with-number",
        ),
        pytest.param(
            {"tags": {"env": "prod"}},
            "field 'tags': expected a string, got an object",
            id="tags-object",
        ),
        pytest.param(
            {"org": "Runnable"},
            "field 'org': expected an object, got \"Runnable\"",
            id="org-string",
        ),
        pytest.param(
            {"org": {"id": ["6585"]}},
            "field 'org.id': expected a string or an integer, got an array",
            id="org-id-array",
        ),
    ],
)
def test_optional_field_problems_are_named_not_refused(
    changes: dict[str, Any], message: str
) -> None:
    payload = {k: v for k, v in {**RECOMMENDED, **changes}.items() if v is not None}
    if "org" in changes:
        payload.pop("org_id")
    notification = parse(payload)
    assert notification.warnings == (message + "; ignored",)
    assert notification.callback_urls == (CB,)


def test_event_id_is_not_taken_from_links_written_in_the_message() -> None:
    # Two different alerts whose messages both mention an old incident: with the id taken from
    # that link they would share `datadog:4242:alert` and the second would be dropped as a dup.
    note = "last incident: https://app.datadoghq.com/event/event?id=4242"
    first = {**RECOMMENDED, "id": "$ID", "link": "$LINK", "body": f"{RECOMMENDED['body']}\n{note}"}
    second = {**first, "alert_id": "155844759", "title": "[Triggered] Card API errors"}
    keys = {parse(first).dedup_key, parse(second).dedup_key}
    assert len(keys) == 2
    assert all(key.startswith("datadog:sha256:") for key in keys)
    assert parse(first).event_id is None


def test_event_id_from_link_field_still_wins_over_the_message() -> None:
    body = "last incident: https://app.datadoghq.com/event/event?id=4242\n" + RECOMMENDED["body"]
    notification = parse({**RECOMMENDED, "id": "$ID", "body": body})
    assert notification.event_id == "7345023619263187422"
    assert notification.dedup_key == "datadog:7345023619263187422:alert"


def test_old_dates_are_kept() -> None:
    # 2015 captures replay fine: an old event cannot overwrite a newer breaker state.
    assert parse({**CAPTURED, "date": "1448435530000"}).event_time_ms == 1448435530000


def test_long_message_and_title_are_cut_after_callbacks_are_read() -> None:
    late = "https://late.example/cb"
    body = (
        RECOMMENDED["body"]
        + "\n"
        + "x" * 100_000
        + f"\ncircuit-breaker-callback: {late}\n"
        + "[[Monitor Status](https://app.datadoghq.com/monitors#987654)]"
    )
    title = "[Triggered on {bank_code:0001}] " + "t" * 5000
    notification = parse({**RECOMMENDED, "alert_id": "$ALERT_ID", "body": body, "title": title})
    assert notification.callback_urls == (CB, late)
    assert notification.monitor_id == "987654"
    assert len(notification.message) == 16_384
    assert notification.message == body[: 16_384 - 12] + "\u2026[truncated]"
    assert len(notification.title) == 1_024
    assert notification.title == title[: 1_024 - 12] + "\u2026[truncated]"
    assert notification.scope == "bank_code:0001,env:prod"


def test_message_and_title_at_the_limits_are_kept_whole() -> None:
    body = RECOMMENDED["body"] + "x" * (16_384 - len(RECOMMENDED["body"]))
    title = RECOMMENDED["title"] + "t" * (1_024 - len(RECOMMENDED["title"]))
    notification = parse({**RECOMMENDED, "body": body, "title": title})
    assert (notification.message, notification.title) == (body, title)


def test_huge_title_is_parsed_in_linear_time() -> None:
    # A guard against quadratic regexes on hostile input, not a speed test.
    title = "[a" + " " * 200_000 + "b]"
    started = time.perf_counter()
    with pytest.raises(PayloadError):
        parse({**RECOMMENDED, "alert_transition": "$ALERT_TRANSITION", "title": title})
    assert time.perf_counter() - started < 1.0


def test_a_problem_shortens_a_long_value() -> None:
    assert parse({**RECOMMENDED, "date": "x" * 500}).warnings == (
        "field 'date': expected epoch milliseconds as a string, got \""
        + "x" * 78
        + "\u2026; ignored",
    )
    with pytest.raises(PayloadError) as caught:
        parse({**RECOMMENDED, "alert_transition": "x" * 500, "title": "Bank API errors"})
    assert '"' + "x" * 78 + "\u2026 and title" in str(caught.value)


# --- Real payload shapes (tests/payloads.py says where each comes from) -----------------------

# Received after the 2025 captures' dates (a date in the future would be ignored and named).
AFTER_2025 = 1_800_000_000_000

SHAPES: dict[str, Any] = {
    "default-2025": (
        payloads.default_payload_2025(CB),
        ("221164084", "8306082202796025694", "alert", "Triggered", None),
    ),
    "komodor-alert-object": (
        payloads.komodor_payload(CB),
        ("155844758", "7345023619263187422", "recovery", "Recovered", "bank_code:0001,env:prod"),
    ),
    "event-and-alert-objects": (
        payloads.event_alert_objects_payload(CB),
        ("221164084", "8306082202796025694", "warning", "Warn", "service:tracking"),
    ),
    "nested-only": (
        payloads.nested_only_payload(CB),
        ("155844758", "7345023619263187422", "alert", "Re-Triggered", "bank_code:0001,env:prod"),
    ),
    "camel-case": (
        payloads.camel_case_payload(CB),
        ("155844758", "7345023619263187422", "no_data", "No Data", "host:db-2"),
    ),
    "form-encoded-objects": (
        payloads.form_encoded_fields(payloads.komodor_payload(CB)),
        ("155844758", "7345023619263187422", "recovery", "Recovered", "bank_code:0001,env:prod"),
    ),
    "form-encoded-nested-only": (
        payloads.form_encoded_fields(payloads.nested_only_payload(CB)),
        ("155844758", "7345023619263187422", "alert", "Re-Triggered", "bank_code:0001,env:prod"),
    ),
}


@pytest.mark.parametrize(("payload", "expected"), SHAPES.values(), ids=SHAPES.keys())
def test_real_payload_shapes(payload: dict[str, Any], expected: tuple[object, ...]) -> None:
    notification = parse_datadog_webhook(payload, keyword=KEYWORD, received_at_ms=AFTER_2025)
    assert (
        notification.monitor_id,
        notification.event_id,
        notification.transition,
        notification.datadog_transition,
        notification.scope,
    ) == expected
    assert notification.callback_urls == (CB,)
    assert notification.dedup_key == f"datadog:{expected[1]}:{expected[2]}"
    assert notification.warnings == ()


def test_nested_fields_are_read_like_flat_ones() -> None:
    notification = parse(payloads.komodor_payload(CB))
    assert notification.alert_cycle_key == "7345011207331812113"
    assert notification.alert_type == "success"
    assert notification.org_id == "11023"
    assert notification.tags == ("monitor", "bank_code:0001", "env:prod")
    nested = parse(payloads.nested_only_payload(CB))
    assert (nested.event_time_ms, nested.event_type, nested.org_id) == (
        1700000000000,
        "query_alert_monitor",
        "11023",
    )
    assert nested.link == "https://app.datadoghq.com/event/jump_to?event_id=7345023619263187422"
    assert parse(payloads.camel_case_payload(CB)).alert_type == "error"


def test_flat_fields_win_over_nested_ones() -> None:
    payload = {**payloads.komodor_payload(CB), "alert_scope": "bank_code:0009"}
    assert parse(payload).scope == "bank_code:0009"


def test_event_id_from_todays_footer_link_when_the_template_has_no_id() -> None:
    # A template without `$ID` (e.g. body, title, transition only): enrichment still gets the
    # event id from the link Datadog wrote; dedup stays on the payload digest, because only
    # `$ID`/`$LINK` are known to name this very event.
    payload = {
        "body": payloads.body_2025(CB),
        "title": "[Triggered] High tracking",
        "transition": "Triggered",
    }
    notification = parse(payload)
    assert notification.event_id == "8306082202796025694"
    assert notification.monitor_id == "221164084"
    assert notification.dedup_key.startswith("datadog:sha256:")
    assert notification.warnings == ()


def test_link_field_with_todays_monitor_link_names_the_event() -> None:
    link = (
        "https://app.datadoghq.com/monitors/221164084?from_ts=1&to_ts=2"
        "&event_id=8306082202796025694&link_source=monitor_notif"
    )
    notification = parse({**RECOMMENDED, "id": "$ID", "link": link})
    assert notification.event_id == "8306082202796025694"
    assert notification.dedup_key == "datadog:8306082202796025694:alert"


def test_an_id_that_is_the_monitor_id_is_not_taken_as_the_event_id() -> None:
    # Several published templates put `$ALERT_ID` under `id`. Taken as the event id, every later
    # alert of the monitor would share a dedup key with the first and be dropped as a duplicate.
    payload = {
        "id": "221164084",
        "title": "[Triggered] High tracking",
        "transition": "Triggered",
        "body": payloads.body_2025(CB),
    }
    notification = parse(payload)
    assert notification.monitor_id == "221164084"
    assert notification.event_id == "8306082202796025694"
    assert notification.dedup_key.startswith("datadog:sha256:")
    assert notification.warnings == (
        "field 'id': \"221164084\" is the monitor id ($ALERT_ID), not the event id ($ID); "
        "not used as the event id",
    )


# --- Malformed optional fields: accepted, ignored, named ------------------------------------

OPTIONAL_PROBLEMS: dict[str, tuple[dict[str, Any], str, object, tuple[str, ...]]] = {
    "org-string": (
        {"org_id": None, "org": "Runnable"},
        "org_id",
        None,
        ("field 'org': expected an object, got \"Runnable\"; ignored",),
    ),
    "org-json-text": ({"org_id": None, "org": '{"id": "6585", "name": "R"}'}, "org_id", "6585", ()),
    "org-broken-json-text": (
        {"org_id": None, "org": '{"id": "6585", '},
        "org_id",
        None,
        ('field \'org\': expected an object, got "{\\"id\\": \\"6585\\", "; ignored',),
    ),
    "org-id-array": (
        {"org_id": None, "org": {"id": ["6585"]}},
        "org_id",
        None,
        ("field 'org.id': expected a string or an integer, got an array; ignored",),
    ),
    "org-flattened": ({"org_id": "6585", "org_name": "Runnable"}, "org_id", "6585", ()),
    "org-bracketed-form-keys": (
        {"org_id": None, "org[id]": "6585", "org[name]": "Runnable"},
        "org_id",
        "6585",
        (),
    ),
    "alert-not-an-object": (
        {"alert": ["x"]},
        "monitor_id",
        "155844758",
        ("field 'alert': expected an object, got an array; ignored",),
    ),
    "unknown-nested-object": (
        {"custom": {"deep": {"list": [1, {"x": None}]}}},
        "monitor_id",
        "155844758",
        (),
    ),
    "unknown-object-inside-alert": (
        {"alert": {"metric": {"name": "x"}, "query": ["q"]}},
        "monitor_id",
        "155844758",
        (),
    ),
    "tags-object": (
        {"tags": {"env": "prod"}},
        "tags",
        (),
        ("field 'tags': expected a string, got an object; ignored",),
    ),
    "tags-list-with-number": (
        {"tags": ["env:prod", 3]},
        "tags",
        ("env:prod",),
        (
            "field 'tags': expected comma-separated tags ($TAGS) or a list of strings, got 3 "
            "among them; ignored",
        ),
    ),
    "scope-number": (
        {"alert_scope": 5},
        "scope",
        "bank_code:0001,env:prod",
        ("field 'alert_scope': expected a string, got 5; ignored",),
    ),
    "title-array": (
        {"title": ["a"]},
        "transition",
        "alert",
        ("field 'title': expected a string, got an array; ignored",),
    ),
    "transition-bool": (
        {"alert_transition": True},
        "datadog_transition",
        "Re-Triggered",
        ("field 'alert_transition': expected a string, got true; ignored",),
    ),
    "event-type-number": (
        {"event_type": 5},
        "event_type",
        None,
        ("field 'event_type': expected a string, got 5; ignored",),
    ),
    "date-not-a-number": (
        {"date": "yesterday"},
        "event_time_ms",
        None,
        ("field 'date': expected epoch milliseconds as a string, got \"yesterday\"; ignored",),
    ),
    "date-in-the-future": (
        {"date": "95617584000000"},
        "event_time_ms",
        None,
        (
            "field 'date': \"95617584000000\" is in the future (more than a day after the router "
            "received it at 2023-11-14T22:13:20+00:00); ignored",
        ),
    ),
    "date-too-long": (
        {"date": 10**40},
        "event_time_ms",
        None,
        (
            "field 'date': expected epoch milliseconds as a string, got \"1"
            + "0" * 40
            + '"; ignored',
        ),
    ),
    "date-float": ({"date": 1448435530000.0}, "event_time_ms", 1448435530000, ()),
    "id-newline-falls-back-to-link": (
        {"id": "12\n34"},
        "event_id",
        "7345023619263187422",
        (
            "field 'id': expected a Datadog event id ($ID: at most 64 letters, digits, '_' or "
            "'-'), got \"12\\n34\"; ignored",
        ),
    ),
    "id-float-would-lose-digits": (
        {"id": 7.345023619263187e18},
        "event_id",
        "7345023619263187422",
        ("field 'id': expected a string or an integer, got 7.345023619263187e+18; ignored",),
    ),
    "link-id-encoded-newline": (
        {"id": "$ID", "link": "https://app.datadoghq.com/event/event?id=12%0A34"},
        "event_id",
        None,
        (
            "field 'link': expected a Datadog event id ($ID: at most 64 letters, digits, '_' or "
            "'-') in the event link, got \"12\\n34\" in "
            '"https://app.datadoghq.com/event/event?id=12%0A34"; ignored',
        ),
    ),
    "alert-id-not-digits": (
        {"alert_id": "monitor-1"},
        "monitor_id",
        None,
        (
            "field 'alert_id': expected the monitor id ($ALERT_ID, at most 20 digits), "
            'got "monitor-1"; ignored',
        ),
    ),
    "alert-id-not-digits-falls-back-to-links": (
        {"alert_id": "monitor-1", "body": TRIGGERED_BODY},
        "monitor_id",
        "309811",
        (
            "field 'alert_id': expected the monitor id ($ALERT_ID, at most 20 digits), "
            'got "monitor-1"; ignored',
        ),
    ),
}


@pytest.mark.parametrize(
    ("changes", "field", "expected", "warnings"),
    OPTIONAL_PROBLEMS.values(),
    ids=OPTIONAL_PROBLEMS.keys(),
)
def test_a_malformed_optional_field_is_ignored_and_named(
    changes: dict[str, Any], field: str, expected: object, warnings: tuple[str, ...]
) -> None:
    payload = {k: v for k, v in {**RECOMMENDED, **changes}.items() if v is not None}
    notification = parse(payload)
    assert getattr(notification, field) == expected
    assert notification.warnings == warnings
    assert notification.callback_urls == (CB,)


def test_warnings_survive_the_queue_round_trip() -> None:
    notification = parse({**RECOMMENDED, "date": "yesterday", "org": "x"})
    assert len(notification.warnings) == 2
    assert Notification.from_dict(json.loads(json.dumps(notification.to_dict()))) == notification
