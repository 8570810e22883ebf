"""Facts Datadog only puts in text: transitions in titles, ids inside links."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from router.parsing.datadog_text import (
    event_id_from_text,
    monitor_id_from_text,
    transition_from_title,
)
from router.parsing.sns import SnsMessage, notification_from_sns


@pytest.mark.parametrize(
    "title, expected",
    [
        (
            "[Triggered on {host:i-3b93aafb}] Dock is almost out of memory...",
            ("alert", "Triggered", False, "host:i-3b93aafb"),
        ),
        (
            "[P1] [Recovered on {bank_code:0001,env:prod}] Bank errors",
            ("recovery", "Recovered", False, "bank_code:0001,env:prod"),
        ),
        ("[Re-Triggered] CPU", ("alert", "Re-Triggered", True, None)),
        ("[Warn] CPU Load", ("warning", "Warn", False, None)),
        ("[No Data on {host:a}] x", ("no_data", "No Data", False, "host:a")),
    ],
)
def test_transition_from_title(title, expected):
    assert tuple(transition_from_title(title)) == expected


@pytest.mark.parametrize("title", ["CPU Load", "[P2] CPU", "[Something] x", ""])
def test_titles_without_a_transition(title):
    assert transition_from_title(title) is None


def test_the_footer_link_wins_over_a_link_the_user_wrote():
    text = (
        "See also https://app.datadoghq.com/monitors/111 for the upstream.\n"
        "[[Monitor Status](https://app.datadoghq.com/monitors#309811?group=host%3Ai-3b93aafb)]"
        " · [[Edit Monitor](https://app.datadoghq.com/monitors#309811/edit)]"
    )
    assert monitor_id_from_text(text) == "309811"


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "Event URL: https://app.datadoghq.com/event/event?id=4437030580617369909 ·",
            "4437030580617369909",
        ),
        ("https://app.datadoghq.com/event/jump_to?event_id=123456", "123456"),
        ("no link", None),
    ],
)
def test_event_id_from_text(text, expected):
    assert event_id_from_text(text) == expected


def test_monitor_links_that_are_not_ids_are_ignored():
    assert monitor_id_from_text("https://app.datadoghq.com/monitors/manage") is None


# A guard against quadratic regexes on hostile input, not a speed test: the bound is generous.
ADVERSARIAL_CHARS = 200_000
LINEAR_BOUND_S = 1.0


def _repeat(unit: str) -> str:
    return unit * (ADVERSARIAL_CHARS // len(unit) + 1)


def _seconds(function: Callable[[str], object], text: str) -> float:
    started = time.perf_counter()
    function(text)
    return time.perf_counter() - started


@pytest.mark.parametrize(
    ("function", "text"),
    [
        pytest.param(
            transition_from_title,
            "[a" + " " * ADVERSARIAL_CHARS + "b]",
            id="title-spaces-in-brackets",
        ),
        pytest.param(
            transition_from_title,
            "[Triggered" + _repeat(" on") + "]",
            id="title-many-ons",
        ),
        pytest.param(transition_from_title, _repeat("[]"), id="title-prefixes"),
        pytest.param(event_id_from_text, _repeat("/event/a?"), id="event-links-no-id"),
        pytest.param(event_id_from_text, _repeat("/event/a?x&"), id="event-query-ands"),
        pytest.param(event_id_from_text, _repeat("/event/a?id=1 "), id="many-event-links"),
        pytest.param(
            monitor_id_from_text, "/monitors/" + "1" * ADVERSARIAL_CHARS, id="monitor-digits"
        ),
    ],
)
def test_hostile_text_is_read_in_linear_time(function: Callable[[str], object], text: str) -> None:
    assert len(text) >= ADVERSARIAL_CHARS
    assert _seconds(function, text) < LINEAR_BOUND_S


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        pytest.param(
            "[Triggered  on  {host:a} ]", ("alert", "Triggered", False, "host:a"), id="spacing"
        ),
        pytest.param(
            "[Triggered on {a}{b}]", ("alert", "Triggered", False, "a}{b"), id="scope-to-last-brace"
        ),
        pytest.param("[Triggered on {}]", ("alert", "Triggered", False, None), id="empty-scope"),
        pytest.param(
            "[Re-No Data on {host:a}] x", ("no_data", "Re-No Data", True, "host:a"), id="re-no-data"
        ),
    ],
)
def test_transition_and_scope_shapes(title, expected):
    assert tuple(transition_from_title(title)) == expected


@pytest.mark.parametrize(
    "title",
    [
        pytest.param("[Triggered on{host:a}] x", id="no-space-before-brace"),
        pytest.param("[Triggered on {host:a} extra] x", id="text-after-scope"),
        pytest.param("[Triggered {host:a}] x", id="no-on"),
        pytest.param("[ on {host:a}] x", id="no-name"),
        pytest.param("[Triggeredon {host:a}] x", id="on-glued-to-name"),
    ],
)
def test_malformed_scope_prefixes_are_not_transitions(title):
    assert transition_from_title(title) is None


def test_only_the_start_of_a_title_is_read():
    prefixes = "[P1] " * 110  # 550 characters
    assert transition_from_title(prefixes[:500] + "[Triggered] x") is not None
    assert transition_from_title(prefixes + "[Triggered] x") is None


@pytest.mark.parametrize(
    "text, expected",
    [
        pytest.param("see https://app.datadoghq.com/event/event?id=42.", "42", id="period-after"),
        pytest.param("(https://app.datadoghq.com/event/event?id=42)", "42", id="in-parens"),
        pytest.param("/event/event?foo=1&id=42", "42", id="id-not-first"),
        pytest.param("/event/jump_to?event_id=7&x=1", "7", id="event-id-then-more"),
        pytest.param("/event/event?id=abc_DEF-9", "abc_DEF-9", id="token-id"),
        pytest.param("/event/event?id=1 and /event/event?id=2", "2", id="last-wins"),
        pytest.param("/event/event?id=1 and /event/event?id=2%0A", "1", id="last-usable-wins"),
        pytest.param("/event/event?id=\u0661\u0662\u0663", None, id="non-ascii-digits"),
        pytest.param("/event/event?id=" + "9" * 5000, None, id="too-long"),
        pytest.param("/event/event?id=12%0A34", None, id="encoded-newline"),
        pytest.param("/event/event?id=12%0034", None, id="encoded-nul"),
        pytest.param("/event/event?foo_id=42", None, id="other-param"),
        pytest.param("/event/event?id=", None, id="empty-id"),
    ],
)
def test_event_id_from_text_shapes(text, expected):
    assert event_id_from_text(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        pytest.param("https://app.datadoghq.com/monitors/\u0661\u0662\u0663", None, id="arabic"),
        pytest.param("https://app.datadoghq.com/monitors/" + "1" * 21, None, id="21-digits"),
        pytest.param("https://app.datadoghq.com/monitors/" + "1" * 20, "1" * 20, id="20-digits"),
    ],
)
def test_monitor_id_from_text_is_ascii_and_bounded(text, expected):
    assert monitor_id_from_text(text) == expected


# Footer links as Datadog writes them in monitor notifications since about 2024 (real messages:
# a 2025 webhook body, a 2026 Slack notification); the event id is a query parameter.
MONITOR_NOTIF_LINK = (
    "https://app.datadoghq.com/monitors/170773010?group=host%3Adb-incident-sandbox"
    "&from_ts=1746012650000&to_ts=1746013850000&event_id=8082436309665268856"
    "&link_source=monitor_notif"
)
SLACK_LINK = (
    "https://us3.datadoghq.com/monitors/444839?from_ts=1788105779000&to_ts=1788106979000"
    "&event_id=8788641826233093636&link_source=monitor_notif&link_monitor_id=444839"
    "&link_event_id=8788641826233093636&link_event_ts=1788106679"
)


@pytest.mark.parametrize(
    ("text", "event_id", "monitor_id"),
    [
        pytest.param(
            f"[[Monitor Status]({MONITOR_NOTIF_LINK})] · [[Edit Monitor]"
            "(https://app.datadoghq.com/monitors/170773010/edit?link_source=monitor_notif)]",
            "8082436309665268856",
            "170773010",
            id="monitors-path-event-id-param",
        ),
        pytest.param(
            f"Recovered: errors ({SLACK_LINK})", "8788641826233093636", "444839", id="slack"
        ),
        pytest.param(
            "https://app.datadoghq.eu/monitors/17447110?from_ts=1&to_ts=2"
            "&event_id=8569009799992849344&link_source=monitor_notif",
            "8569009799992849344",
            "17447110",
            id="eu-site",
        ),
        pytest.param(
            "/monitors/5?link_source=monitor_notif&link_event_id=77", "77", "5", id="link-event-id"
        ),
        pytest.param(
            "/monitors/5?from_ts=1&amp;event_id=88&amp;link_source=monitor_notif",
            "88",
            "5",
            id="html-escaped-ampersands",
        ),
        pytest.param(
            "Monitor Status: https://app.datadoghq.com/monitors#5203057?group=docker_image%3Anginx"
            " · Edit Monitor: https://app.datadoghq.com/monitors#5203057/edit · Event URL: "
            "https://app.datadoghq.com/event/event?id=4437030580617369909 · Related Logs: x",
            "4437030580617369909",
            "5203057",
            id="2018-sns-text",
        ),
        pytest.param(
            "https://app.datadoghq.com/event/jump_to?event_id=123456", "123456", None, id="jump-to"
        ),
        pytest.param(
            "View in Log Explorer (https://us3.datadoghq.com/logs?query=env%3Aprod"
            "&link_monitor_id=444839)",
            None,
            "444839",
            id="logs-link-monitor-id",
        ),
        pytest.param(
            "[[Monitor Status](https://app.datadoghq.com/monitors#18692904?)]",
            None,
            "18692904",
            id="2020-empty-query",
        ),
    ],
)
def test_ids_from_every_datadog_link_form(
    text: str, event_id: str | None, monitor_id: str | None
) -> None:
    assert (event_id_from_text(text), monitor_id_from_text(text)) == (event_id, monitor_id)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(
            "/monitors/5?event_id=12%0A34&link_source=monitor_notif", id="encoded-newline"
        ),
        pytest.param("/monitors/manage?event_id=42", id="not-a-monitor-page"),
        pytest.param("/logs?query=x&event_id=42", id="not-a-monitor-or-event-link"),
    ],
)
def test_unusable_event_ids_in_monitor_links_are_ignored(text: str) -> None:
    assert event_id_from_text(text) is None


def test_hostile_monitor_link_queries_are_read_in_linear_time() -> None:
    text = _repeat("/monitors/1?event_id=1&") + _repeat("/monitors/1?&amp;")
    assert _seconds(event_id_from_text, text) < LINEAR_BOUND_S
    assert _seconds(monitor_id_from_text, _repeat("&link_monitor_id=1")) < LINEAR_BOUND_S


def test_an_sns_message_in_todays_form_names_its_event_and_monitor() -> None:
    # Datadog's SNS Message is the plain-text notification; today its links are the footer
    # form, with no `/event/event?id=` link left to read.
    text = (
        "High tracking\ncircuit-breaker-callback: https://bank-charge.internal/breaker/callback\n"
        "datadog.event.tracking.intakev2.audit.bytes over * was > 100.0 on average during the "
        f"last 5m.\nMonitor Status: {MONITOR_NOTIF_LINK} · Edit Monitor: "
        "https://app.datadoghq.com/monitors/170773010/edit?link_source=monitor_notif"
    )
    message = SnsMessage(
        type="Notification",
        message_id="22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        topic_arn="arn:aws:sns:us-east-1:123456789012:datadog",
        message=text,
        timestamp="2026-12-03T09:00:00.000Z",
        signature_version="2",
        signature="",
        signing_cert_url="",
        subject="[Triggered on {host:db-incident-sandbox}] High tracking",
    )
    notification = notification_from_sns(
        message, keyword="circuit-breaker-callback", received_at_ms=0
    )
    assert (notification.event_id, notification.monitor_id, notification.transition) == (
        "8082436309665268856",
        "170773010",
        "alert",
    )
