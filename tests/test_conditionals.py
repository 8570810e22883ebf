"""Offline rendering and linting of monitor message conditionals (router.parsing.conditionals)."""

from __future__ import annotations

import json

import pytest

from router.parsing.conditionals import (
    LINT_TRANSITIONS,
    LintReport,
    TransitionLint,
    lint_message,
    render_for,
)

KEYWORD = "circuit-breaker-callback"
CB = "https://bank-charge.internal/breaker/callback"

# The two lines DESIGN.md tells users to write, under a handle that reaches the router.
DESIGN_MESSAGE = (
    "Bank {{bank_code.name}} charge errors are high. @webhook-breaker-router\n"
    f"{{{{#is_alert}}}}circuit-breaker-callback: {CB}{{{{/is_alert}}}}\n"
    f"{{{{#is_alert_recovery}}}}circuit-breaker-callback: {CB}{{{{/is_alert_recovery}}}}\n"
)
# The README's: its recovery line covers every recovery, from Warn too.
README_MESSAGE = DESIGN_MESSAGE.replace("is_alert_recovery", "is_recovery")

# Where Datadog documents each variable as true, written out independently of the module.
TRUTH = {
    "is_alert": {"alert", "warning_to_alert", "renotify"},
    "is_warning": {"warning", "alert_to_warning"},
    "is_recovery": {"alert_recovery", "warning_recovery", "no_data_recovery"},
    "is_alert_recovery": {"alert_recovery"},
    "is_warning_recovery": {"warning_recovery"},
    "is_no_data": {"no_data"},
    "is_no_data_recovery": {"no_data_recovery"},
    "is_alert_to_warning": {"alert_to_warning"},
    "is_warning_to_alert": {"warning_to_alert"},
    "is_renotify": {"renotify"},
    "is_unknown": set(),
}


@pytest.mark.parametrize(
    ("variable", "transition"),
    [(v, t) for v in TRUTH for t in LINT_TRANSITIONS],
    ids=[f"{v}-{t}" for v in TRUTH for t in LINT_TRANSITIONS],
)
def test_truth_table(variable: str, transition: str) -> None:
    message = (
        f"[{{{{#{variable}}}}}yes{{{{/{variable}}}}}|{{{{^{variable}}}}}no{{{{/{variable}}}}}]"
    )
    expected = "[yes|]" if transition in TRUTH[variable] else "[|no]"
    assert render_for(message, transition) == expected


def test_transitions_offered() -> None:
    assert LINT_TRANSITIONS == (
        "alert",
        "warning",
        "warning_to_alert",
        "alert_to_warning",
        "alert_recovery",
        "warning_recovery",
        "no_data",
        "no_data_recovery",
        "renotify",
    )


@pytest.mark.parametrize(
    ("message", "transition", "expected"),
    [
        pytest.param(
            DESIGN_MESSAGE,
            "alert",
            (
                "Bank {{bank_code.name}} charge errors are high. @webhook-breaker-router\n"
                f"circuit-breaker-callback: {CB}\n\n"
            ),
            id="design-alert",
        ),
        pytest.param(
            DESIGN_MESSAGE,
            "alert_recovery",
            (
                "Bank {{bank_code.name}} charge errors are high. @webhook-breaker-router\n"
                f"\ncircuit-breaker-callback: {CB}\n"
            ),
            id="design-recovery",
        ),
        pytest.param(
            DESIGN_MESSAGE,
            "warning",
            ("Bank {{bank_code.name}} charge errors are high. @webhook-breaker-router\n\n\n"),
            id="design-warning",
        ),
        pytest.param("{{#is_alert}}A{{else}}B{{/is_alert}}", "alert", "A", id="else-true"),
        pytest.param("{{#is_alert}}A{{else}}B{{/is_alert}}", "warning", "B", id="else-false"),
        pytest.param("{{^is_alert}}A{{else}}B{{/is_alert}}", "alert", "B", id="inverted-else"),
        pytest.param("{{#is_alert}}A{{^}}B{{/is_alert}}", "no_data", "B", id="caret-else-alias"),
        pytest.param(
            "{{#is_recovery}}R{{#is_alert_recovery}}-from-alert{{/is_alert_recovery}}"
            "{{/is_recovery}}",
            "alert_recovery",
            "R-from-alert",
            id="nested-both-true",
        ),
        pytest.param(
            "{{#is_recovery}}R{{#is_alert_recovery}}-from-alert{{/is_alert_recovery}}"
            "{{/is_recovery}}",
            "warning_recovery",
            "R",
            id="nested-inner-false",
        ),
        pytest.param(
            "{{#is_alert}}A{{#is_recovery}}never{{/is_recovery}}{{/is_alert}}",
            "alert_recovery",
            "",
            id="nested-outer-false",
        ),
        pytest.param(
            "{{#is_alert}}A{{/is_alert}}{{^is_renotify}} first{{/is_renotify}}",
            "renotify",
            "A",
            id="renotify-is-alert",
        ),
        pytest.param(
            '{{#is_match "env" "prod"}}P{{else}}Q{{/is_match}}', "warning", "P", id="is-match"
        ),
        pytest.param(
            '{{#is_exact_match "host.name" "a"}}P{{/is_exact_match}}', "alert", "P", id="exact"
        ),
        pytest.param("{{#is_priority 'P1'}}P{{/is_priority}}", "alert", "P", id="is-priority"),
        pytest.param(
            '{{^is_match "env" "prod"}}P{{/is_match}}', "alert", "P", id="inverted-is-match"
        ),
        pytest.param(
            "{{value}} > {{threshold}} on {{host.name}} {{{raw_html}}}",
            "alert",
            "{{value}} > {{threshold}} on {{host.name}} {{{raw_html}}}",
            id="variables-stay",
        ),
        pytest.param(
            "a{{!-- hidden {{#is_alert}} --}}b{{! note }}c", "alert", "abc", id="comments"
        ),
        pytest.param(
            "{{{{raw}}}}{{#is_alert}}kept{{/is_alert}}{{{{/raw}}}}",
            "warning",
            "{{#is_alert}}kept{{/is_alert}}",
            id="raw-block",
        ),
        pytest.param("{{~#is_alert~}}A{{~/is_alert~}}", "alert", "A", id="whitespace-control"),
        pytest.param("{{ #is_alert }}A{{ /is_alert }}", "alert", "A", id="spaces-in-tags"),
        pytest.param("line1\r\n{{#is_alert}}A{{/is_alert}}\r\n", "alert", "line1\nA\n", id="crlf"),
    ],
)
def test_render_for(message: str, transition: str, expected: str) -> None:
    assert render_for(message, transition) == expected


def test_render_for_unknown_transition() -> None:
    with pytest.raises(ValueError, match="unknown transition 'recovery'; expected one of alert,"):
        render_for(DESIGN_MESSAGE, "recovery")


def test_lint_design_message() -> None:
    report = lint_message(DESIGN_MESSAGE, KEYWORD)
    urls = {result.transition: result.callback_urls for result in report.transitions}
    assert urls == {
        "alert": (CB,),
        "warning": (),
        "warning_to_alert": (CB,),
        "alert_to_warning": (),
        "alert_recovery": (CB,),
        "warning_recovery": (),
        "no_data": (),
        "no_data_recovery": (),
        "renotify": (CB,),
    }
    assert report.problems == ()
    # Alert -> Warn -> OK sends warning_recovery, which {{#is_alert_recovery}} does not cover.
    assert report.warnings == (
        f"{CB} is called on alert_recovery but not on warning_recovery: a monitor with a "
        "warning threshold that falls back to Warn before it recovers sends warning_recovery, "
        "so a breaker it opened is closed only by the reconciler, within about 2 x "
        "ROUTER_RECONCILE_INTERVAL (2m), and only if the workers have DD_API_KEY and "
        "DD_APP_KEY; use {{#is_recovery}} (every recovery) for the recovery line, unless the "
        "monitor has no warning threshold",
    )
    assert [note.split(": ", 1)[1].split(" (")[0] for note in report.notes] == [
        "on warning",
        "on alert_to_warning",
        "on no_data",
    ]
    assert "the breaker stays closed" in report.notes[0] and "'Warn'" in report.notes[0]
    assert "stays open until a recovery" in report.notes[1]
    assert "keeps its state" in report.notes[2] and "'No Data'" in report.notes[2]
    assert report.ok
    assert report.transitions[0] == TransitionLint("alert", (CB,), ("@webhook-breaker-router",), ())


def test_lint_the_readme_message_covers_every_recovery() -> None:
    report = lint_message(README_MESSAGE, KEYWORD)
    assert report.warnings == () and report.problems == ()
    urls = {result.transition: result.callback_urls for result in report.transitions}
    assert urls["warning_recovery"] == urls["no_data_recovery"] == (CB,)


def test_lint_to_dict_is_json() -> None:
    report = lint_message(DESIGN_MESSAGE, KEYWORD)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is True
    assert data["keyword"] == KEYWORD
    assert data["transitions"][4] == {
        "transition": "alert_recovery",
        "callback_urls": [CB],
        "handles": ["@webhook-breaker-router"],
        "problems": [],
    }
    assert set(data) == {"keyword", "transitions", "problems", "warnings", "notes", "ok"}


def test_report_is_frozen() -> None:
    report = lint_message(DESIGN_MESSAGE, KEYWORD)
    with pytest.raises(AttributeError):
        report.problems = ()  # type: ignore[misc]
    assert isinstance(report, LintReport)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        pytest.param(
            "@webhook-r\n{{#is_alert}}x\n{{/is_alert}}\n{{/is_alert}}",
            ["line 4: {{/is_alert}} closes no open block"],
            id="stray-closer",
        ),
        pytest.param(
            "@webhook-r\n{{#is_alert}}x\n{{/is_warning}}{{/is_alert}}",
            ["line 3: {{/is_warning}} closes no open block ({{#is_alert}} from line 2 is open)"],
            id="mismatched-closer",
        ),
        pytest.param(
            "@webhook-r\n{{#is_recovery}}\n{{#is_alert_recovery}}x\n{{/is_recovery}}",
            ["line 3: {{#is_alert_recovery}} is never closed before {{/is_recovery}}"],
            id="inner-never-closed",
        ),
        pytest.param(
            "@webhook-r\n\n{{#is_alert}}x",
            ["line 3: {{#is_alert}} is never closed"],
            id="never-closed",
        ),
        pytest.param(
            "@webhook-r {{else}}",
            ["line 1: {{else}} outside any block"],
            id="else-outside",
        ),
        pytest.param(
            "@webhook-r {{#is_alert}}a{{else}}b\n{{else}}c{{/is_alert}}",
            ["line 2: second {{else}} in {{#is_alert}}"],
            id="second-else",
        ),
        pytest.param(
            "@webhook-r {{#is_alert}}a{{else is_warning}}b{{/is_alert}}",
            [
                "line 1: {{else is_warning}}: Datadog documents only a plain {{else}}; "
                "treated as one"
            ],
            id="chained-else",
        ),
        pytest.param(
            "@webhook-r\n{{#is_alerting}}x{{/is_alerting}}",
            [
                "line 2: {{#is_alerting}} is not a Datadog conditional variable, so Datadog "
                "treats it as false; known ones: is_alert, is_alert_recovery, "
                "is_alert_to_warning, is_no_data, is_no_data_recovery, is_recovery, "
                "is_renotify, is_unknown, is_warning, is_warning_recovery, is_warning_to_alert"
            ],
            id="unknown-variable",
        ),
    ],
)
def test_structural_problems(message: str, expected: list[str]) -> None:
    # A valid callback on alert and recovery so that only the structural problem shows.
    body = (
        f"{message}\n{{{{#is_alert}}}}{KEYWORD}: {CB}{{{{/is_alert}}}}"
        f"{{{{#is_alert_recovery}}}}{KEYWORD}: {CB}{{{{/is_alert_recovery}}}}"
    )
    assert list(lint_message(body, KEYWORD).problems) == expected


def test_no_callback_line_is_a_problem() -> None:
    report = lint_message("Disk full @webhook-breaker-router", KEYWORD)
    assert report.problems == (
        'no "circuit-breaker-callback:" line: no transition would call any service',
    )
    assert not report.ok
    assert all(result.callback_urls == () for result in report.transitions)


def test_no_callback_line_names_the_configured_keyword() -> None:
    report = lint_message(DESIGN_MESSAGE, "breaker-hook")
    assert report.problems == ('no "breaker-hook:" line: no transition would call any service',)


def test_callback_problems_carry_source_line_numbers() -> None:
    message = (
        "Bank errors @webhook-breaker-router\n"  # 1
        "{{#is_warning}}\n"  # 2
        "warning text\n"  # 3
        "{{/is_warning}}\n"  # 4
        "{{#is_alert}}\n"  # 5
        "circuit-breaker-callback: https://x.example/{{bank_code.name}}\n"  # 6
        "{{/is_alert}}\n"  # 7
        "{{#is_alert_recovery}}circuit-breaker-callback: bank.internal/cb{{/is_alert_recovery}}\n"
    )
    report = lint_message(message, KEYWORD)
    variable = (
        'line 6: circuit-breaker-callback: "https://x.example/{{bank_code.name}}" contains the '
        "template variable {{bank_code.name}}: the router would call whatever Datadog renders "
        "there"
    )
    not_url = 'line 8: circuit-breaker-callback: "bank.internal/cb" is not an http(s) URL'
    by_name = {result.transition: result for result in report.transitions}
    assert by_name["alert"].problems == (variable,)
    assert by_name["renotify"].problems == (variable,)
    assert by_name["alert_recovery"].problems == (not_url,)
    assert by_name["warning"].problems == ()
    assert report.problems == (variable, not_url)
    assert all(result.callback_urls == () for result in report.transitions)


def test_unconditional_callback_line_warns() -> None:
    message = (
        "Bank errors @webhook-breaker-router\n"
        "{{#is_alert}}Check the dashboard.{{/is_alert}}\n"
        f"circuit-breaker-callback: {CB}\n"
    )
    report = lint_message(message, KEYWORD)
    assert all(result.callback_urls == (CB,) for result in report.transitions)
    assert report.warnings == (
        "line 3: this callback line is outside any conditional, so it fires on every "
        "transition, recoveries included; that is right only if the service reads the "
        "transition from the callback body",
    )
    assert report.problems == ()


def test_alert_without_recovery_warns() -> None:
    message = f"@webhook-breaker-router {{{{#is_alert}}}}{KEYWORD}: {CB}{{{{/is_alert}}}}"
    report = lint_message(message, KEYWORD, reconcile_interval_s=300)
    assert report.warnings == (
        f"{CB} is called on alert but not on alert_recovery: a breaker it opens is closed "
        "only by the reconciler, within about 2 x ROUTER_RECONCILE_INTERVAL (10m), and only "
        "if the workers have DD_API_KEY and DD_APP_KEY; add a {{#is_recovery}} callback line",
    )
    assert report.ok  # the reconciler exists, so a warning, not an error


def test_handle_only_inside_alert_block_warns_for_recovery() -> None:
    message = (
        "{{#is_alert}}@webhook-breaker-router{{/is_alert}}\n"
        f"{{{{#is_alert}}}}{KEYWORD}: {CB}{{{{/is_alert}}}}\n"
        f"{{{{#is_recovery}}}}{KEYWORD}: {CB}{{{{/is_recovery}}}}\n"
    )
    report = lint_message(message, KEYWORD)
    assert report.warnings == (
        "on alert_recovery, warning_recovery, no_data_recovery the message has callback lines "
        "but names no @webhook-... or @sns-... handle, so Datadog sends it nowhere the router "
        "hears it",
    )
    by_name = {result.transition: result for result in report.transitions}
    assert by_name["alert"].handles == ("@webhook-breaker-router",)
    assert by_name["alert_recovery"].handles == ()


def test_sns_handle_counts() -> None:
    message = README_MESSAGE.replace("@webhook-breaker-router", "@sns-breaker-topic")
    report = lint_message(message, KEYWORD)
    assert report.warnings == ()
    assert report.transitions[0].handles == ("@sns-breaker-topic",)


def test_unevaluable_conditional_is_a_note_and_included() -> None:
    message = (
        "@webhook-breaker-router\n"
        '{{#is_match "bank_code.name" "0001"}}\n'
        f"{{{{#is_alert}}}}{KEYWORD}: {CB}{{{{/is_alert}}}}\n"
        f"{{{{#is_alert_recovery}}}}{KEYWORD}: {CB}{{{{/is_alert_recovery}}}}\n"
        "{{/is_match}}\n"
    )
    report = lint_message(message, KEYWORD)
    assert report.notes[:1] == (
        'line 2: {{#is_match "bank_code.name" "0001"}} depends on tags or priority this lint '
        "cannot see; its block is treated as included",
    )
    assert report.problems == ()
    assert report.transitions[0].callback_urls == (CB,)


def test_is_unknown_note() -> None:
    message = DESIGN_MESSAGE + "{{#is_unknown}}unknown{{/is_unknown}}"
    assert lint_message(message, KEYWORD).notes[:1] == (
        "line 4: {{#is_unknown}} is never true in these transitions",
    )


def test_rendered_message_markdown_shapes_still_found() -> None:
    message = (
        "%%%\n@webhook-breaker-router\n"
        f"{{{{#is_alert}}}}* **circuit-breaker-callback:** [{CB}]({CB}){{{{/is_alert}}}}\n"
        f"{{{{#is_alert_recovery}}}}- circuit-breaker-callback: <{CB}>{{{{/is_alert_recovery}}}}"
        "\n%%%"
    )
    report = lint_message(message, KEYWORD)
    by_name = {result.transition: result.callback_urls for result in report.transitions}
    assert by_name["alert"] == (CB,)
    assert by_name["alert_recovery"] == (CB,)
    assert report.problems == ()
