"""Facts Datadog only puts in text: transitions in titles, ids inside links."""

from __future__ import annotations

import pytest

from router.parsing.datadog_text import (
    event_id_from_text,
    monitor_id_from_text,
    transition_from_title,
)


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
