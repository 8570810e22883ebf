"""Callback lines in rendered monitor messages (router.parsing.callbacks)."""

from __future__ import annotations

import time

import pytest

from router.parsing.callbacks import (
    CallbackLine,
    extract_callback_urls,
    find_callback_problems,
    scan_callback_lines,
)

CB = "https://bank-charge.internal/breaker/callback"

# $EVENT_MSG as Datadog delivered it (CodeNow/fluffy capture, datadog-protocol.md §1.6), with a
# callback line added where a user would put it in the monitor message.
TRIGGERED_BODY = (
    "%%%\nrestart docker\nhttps://github.com/CodeNow/devops-scripts/wiki/Restarting-Docker\n\n"
    f"circuit-breaker-callback: {CB}\n"
    "or add new dock @slack-ops @pagerduty @webhook-test2 @webhook-fluffy\n\n\n\n"
    "[![Metric Graph](https://p.datadoghq.com/snapshot/view/dd-snapshots-prod/org_9822/"
    "2015-11-25/f19af4d9981c8baa5a0692d565014b4808a07a80.png)](https://app.datadoghq.com/"
    "monitors#309811?to_ts=1448435520000&group=host%3Ai-3b93aafb&from_ts=1448431920000)\n\n"
    "  **system.mem.usable** over **region:us-west-1, role:dock** was **<= 500000000.0** on "
    "average during the **last 30m**.\n\n"
    "**Dock is almost out of memory...** was last triggered **10 secs ago**.\n\n- - -\n\n"
    "[[Monitor Status](https://app.datadoghq.com/monitors#309811?group=host%3Ai-3b93aafb)] · "
    "[[Edit Monitor](https://app.datadoghq.com/monitors#309811/edit)] · "
    "[[View i-3b93aafb](https://app.datadoghq.com/infrastructure?hostname=i-3b93aafb)]\n%%%"
)
RECOVERED_BODY_WITHOUT_CALLBACK = (
    "%%%\nrestart docker\nhttps://github.com/CodeNow/devops-scripts/wiki/Restarting-Docker\n\n"
    "or add new dock @slack-ops @pagerduty @webhook-test2 @webhook-fluffy\n\n\n\n"
    "  **Dock is almost out of memory...** was marked as **recovered** on "
    "**host:i-3b93aafb,region:us-west-1,role:dock** by Anand Patel.\n\n"
    "**Dock is almost out of memory...** was last triggered **3 mins ago**.\n\n- - -\n\n"
    "[[Monitor Status](https://app.datadoghq.com/monitors#309811?group=host%3Ai-3b93aafb)] · "
    "[[Edit Monitor](https://app.datadoghq.com/monitors#309811/edit)]\n%%%"
)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        pytest.param(TRIGGERED_BODY, (CB,), id="real-event-msg"),
        pytest.param(RECOVERED_BODY_WITHOUT_CALLBACK, (), id="real-body-without-callback"),
        pytest.param(f"circuit-breaker-callback: {CB}", (CB,), id="bare-line"),
        pytest.param(f"%%%\ncircuit-breaker-callback: {CB}\n%%%", (CB,), id="percent-wrapper"),
        pytest.param(f"circuit-breaker-callback: {CB}%%%", (CB,), id="percent-glued-to-url"),
        pytest.param(f"circuit-breaker-callback: [{CB}]({CB})", (CB,), id="markdown-autolink"),
        pytest.param(
            f'circuit-breaker-callback: [the breaker]({CB} "title")', (CB,), id="markdown-link"
        ),
        pytest.param(f"circuit-breaker-callback: [x](<{CB}>)", (CB,), id="markdown-angled-target"),
        pytest.param(f"circuit-breaker-callback: <{CB}>", (CB,), id="angle-brackets"),
        pytest.param(f"circuit-breaker-callback: <{CB}|breaker>", (CB,), id="slack-link"),
        pytest.param(
            f"circuit-breaker-callback: &lt;{CB}&gt;", (CB,), id="entity-encoded-angle-brackets"
        ),
        pytest.param(f"`circuit-breaker-callback: {CB}`", (CB,), id="backticks-around-line"),
        pytest.param(f"circuit-breaker-callback: `{CB}`", (CB,), id="backticks-around-url"),
        pytest.param(f"circuit-breaker-callback: **{CB}**", (CB,), id="bold-url"),
        pytest.param(f"circuit-breaker-callback: _{CB}_", (CB,), id="italic-url"),
        pytest.param(f"* circuit-breaker-callback: {CB}", (CB,), id="star-bullet"),
        pytest.param(f"- circuit-breaker-callback: {CB}", (CB,), id="dash-bullet"),
        pytest.param(f"**circuit-breaker-callback:** {CB}", (CB,), id="bold-keyword-and-colon"),
        pytest.param(f"**circuit-breaker-callback**: {CB}", (CB,), id="bold-keyword"),
        pytest.param(f"_circuit-breaker-callback_ : {CB}", (CB,), id="italic-keyword"),
        pytest.param(f"CIRCUIT-Breaker-Callback: {CB}", (CB,), id="keyword-case"),
        pytest.param(f"circuit-breaker-callback:{CB}", (CB,), id="no-space-after-colon"),
        pytest.param(f"circuit-breaker-callback :\t {CB}  \t", (CB,), id="tabs-and-spaces"),
        pytest.param(f"Breaker: circuit-breaker-callback: {CB}", (CB,), id="text-before"),
        pytest.param(
            f"circuit-breaker-callback: {CB} @webhook-breaker-router", (CB,), id="handle-after"
        ),
        pytest.param(f"circuit-breaker-callback: {CB}.", (CB,), id="trailing-period"),
        pytest.param(f"circuit-breaker-callback: {CB},", (CB,), id="trailing-comma"),
        pytest.param(f"(circuit-breaker-callback: {CB})", (CB,), id="trailing-paren"),
        pytest.param(
            "circuit-breaker-callback: https://w.example/wiki/Foo_(bar)",
            ("https://w.example/wiki/Foo_(bar)",),
            id="balanced-paren-kept",
        ),
        pytest.param(
            "circuit-breaker-callback: https://x.example/cb?bank=0001&amp;env=prod",
            ("https://x.example/cb?bank=0001&env=prod",),
            id="amp-entity",
        ),
        pytest.param(
            "circuit-breaker-callback: https:&#x2F;&#x2F;x.example&#47;cb",
            ("https://x.example/cb",),
            id="slash-entities",
        ),
        pytest.param(
            "circuit-breaker-callback: &quot;https://x.example/cb&quot;",
            ("https://x.example/cb",),
            id="quot-entities",
        ),
        pytest.param(
            "circuit-breaker-callback: https://x.example/cb\u200b",
            ("https://x.example/cb",),
            id="zero-width-space",
        ),
        pytest.param(
            "circuit-breaker-callback: https://x.example/a\\_b",
            ("https://x.example/a_b",),
            id="markdown-escape",
        ),
        pytest.param(
            "intro\r\ncircuit-breaker-callback: https://a.example/cb\r\n"
            "circuit-breaker-callback: https://b.example/cb\r\n",
            ("https://a.example/cb", "https://b.example/cb"),
            id="crlf-two-lines",
        ),
        pytest.param(
            "%%%\\ncircuit-breaker-callback: https://a.example/cb\\n"
            "circuit-breaker-callback: https://b.example/cb\\n%%%",
            ("https://a.example/cb", "https://b.example/cb"),
            id="literal-backslash-n-escapes",
        ),
        pytest.param(
            "circuit-breaker-callback: https://a.example/cb circuit-breaker-callback: "
            "https://b.example/cb",
            ("https://a.example/cb", "https://b.example/cb"),
            id="two-on-one-line",
        ),
        pytest.param(
            f"circuit-breaker-callback: {CB}\ncircuit-breaker-callback: {CB}", (CB,), id="dup"
        ),
        pytest.param(
            "circuit-breaker-callback: https://a.example/cb\n"
            "circuit-breaker-callback: HTTPS://A.EXAMPLE/cb",
            ("https://a.example/cb",),
            id="dup-scheme-host-case",
        ),
        pytest.param(
            "circuit-breaker-callback: https://a.example/CB\n"
            "circuit-breaker-callback: https://a.example/cb",
            ("https://a.example/CB", "https://a.example/cb"),
            id="path-case-is-distinct",
        ),
        pytest.param(
            "circuit-breaker-callback: https://Bank.Example/Cb",
            ("https://Bank.Example/Cb",),
            id="returned-as-written",
        ),
        pytest.param(
            "circuit-breaker-callback: http://127.0.0.1:8080/cb",
            ("http://127.0.0.1:8080/cb",),
            id="http-with-port",
        ),
        pytest.param(
            "circuit-breaker-callback: bank-charge.internal/cb\n"
            "circuit-breaker-callback: https://ok.example/cb",
            ("https://ok.example/cb",),
            id="bad-line-skipped",
        ),
        pytest.param(f"x-circuit-breaker-callback: {CB}", (), id="longer-word-not-keyword"),
        pytest.param(f"circuit-breaker-callbacks: {CB}", (), id="keyword-prefix-of-word"),
        pytest.param(f"circuit-breaker-callback {CB}", (), id="no-colon"),
        pytest.param(f"circuit-breaker-callback:\n{CB}", (), id="url-on-next-line"),
    ],
)
def test_extract_callback_urls(message: str, expected: tuple[str, ...]) -> None:
    assert extract_callback_urls(message) == expected


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        pytest.param(
            "intro\ncircuit-breaker-callback: bank-charge.internal/cb",
            ['line 2: circuit-breaker-callback: "bank-charge.internal/cb" is not an http(s) URL'],
            id="no-scheme",
        ),
        pytest.param(
            "circuit-breaker-callback: ftp://x.example/cb",
            ['line 1: circuit-breaker-callback: "ftp://x.example/cb" is not an http(s) URL'],
            id="ftp",
        ),
        pytest.param(
            "circuit-breaker-callback:   ",
            ['line 1: nothing follows "circuit-breaker-callback:"; put the URL on the same line'],
            id="empty",
        ),
        pytest.param(
            "circuit-breaker-callback: **",
            ['line 1: circuit-breaker-callback: "**" holds no URL'],
            id="only-emphasis",
        ),
        pytest.param(
            "circuit-breaker-callback: https:///cb",
            ['line 1: circuit-breaker-callback: "https:///cb" has no host'],
            id="no-host",
        ),
        pytest.param(
            "circuit-breaker-callback: https://x.example:99999/cb",
            [
                'line 1: circuit-breaker-callback: "https://x.example:99999/cb" is not a valid '
                "URL (Port out of range 0-65535)"
            ],
            id="port-out-of-range",
        ),
        pytest.param(
            "circuit-breaker-callback: https://x.example/{{ bank_code.name }}/cb",
            [
                'line 1: circuit-breaker-callback: "https://x.example/{{ bank_code.name }}/cb" '
                "contains the template variable {{ bank_code.name }}: the router would call "
                "whatever Datadog renders there"
            ],
            id="template-variable",
        ),
        pytest.param(
            "circuit-breaker-callback: https://x.example\\path",
            ['line 1: circuit-breaker-callback: "https://x.example\\\\path" contains a backslash'],
            id="backslash",
        ),
        pytest.param(TRIGGERED_BODY, [], id="real-body-no-problems"),
        pytest.param(RECOVERED_BODY_WITHOUT_CALLBACK, [], id="no-keyword-no-problems"),
    ],
)
def test_find_callback_problems(message: str, expected: list[str]) -> None:
    assert find_callback_problems(message) == expected


def test_scan_reports_each_occurrence_with_line_value_and_outcome() -> None:
    message = (
        "a\n* **circuit-breaker-callback:** <https://a.example/cb>\ncircuit-breaker-callback: nope"
    )
    assert scan_callback_lines(message) == (
        CallbackLine(2, "<https://a.example/cb>", "https://a.example/cb", None),
        CallbackLine(3, "nope", None, 'circuit-breaker-callback: "nope" is not an http(s) URL'),
    )


@pytest.mark.parametrize(
    ("keyword", "message", "expected"),
    [
        pytest.param(
            "breaker-hook",
            "breaker-hook: https://a.example/cb",
            ("https://a.example/cb",),
            id="custom",
        ),
        pytest.param("breaker.hook", "breakerXhook: https://a.example/cb", (), id="dot-is-escaped"),
        pytest.param(
            "cb+(v1)", "CB+(V1): https://a.example/cb", ("https://a.example/cb",), id="specials"
        ),
        pytest.param("breaker-hook", f"circuit-breaker-callback: {CB}", (), id="default-not-used"),
        pytest.param(
            " breaker-hook ",
            "breaker-hook: https://a.example/cb",
            ("https://a.example/cb",),
            id="keyword-stripped",
        ),
    ],
)
def test_configurable_keyword(keyword: str, message: str, expected: tuple[str, ...]) -> None:
    assert extract_callback_urls(message, keyword) == expected


def test_problem_names_the_configured_keyword() -> None:
    assert find_callback_problems("breaker-hook: nope", "breaker-hook") == [
        'line 1: breaker-hook: "nope" is not an http(s) URL'
    ]


@pytest.mark.parametrize("keyword", ["", "   "], ids=["empty", "blank"])
def test_blank_keyword_is_refused(keyword: str) -> None:
    with pytest.raises(ValueError, match="callback keyword must not be empty"):
        extract_callback_urls(f"circuit-breaker-callback: {CB}", keyword)


# A guard against quadratic regexes on hostile input, not a speed test: the bound is generous.
ADVERSARIAL_CHARS = 200_000
LINEAR_BOUND_S = 1.0


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(
            "circuit-breaker-callback: " + "{{" * (ADVERSARIAL_CHARS // 2), id="one-long-value"
        ),
        # Each value just under the length cap, so every pattern runs on every one of them.
        pytest.param(
            ("circuit-breaker-callback: " + "{{" * 1000 + "\n") * 100, id="values-under-cap"
        ),
        pytest.param(
            ("circuit-breaker-callback: https://x.example/" + "{{ a" * 500 + "\n") * 100,
            id="unclosed-template-variables",
        ),
        pytest.param(
            ("circuit-breaker-callback: [x](https://x.example/" + "(" * 2000 + "\n") * 100,
            id="markdown-link-parens",
        ),
        pytest.param(
            ("circuit-breaker-callback: https://x.example/" + ")" * 2000 + "\n") * 100,
            id="trailing-closers",
        ),
        pytest.param(
            "circuit-breaker-callback" + " " * ADVERSARIAL_CHARS + "x", id="keyword-then-spaces"
        ),
    ],
)
def test_hostile_messages_are_scanned_in_linear_time(message: str) -> None:
    assert len(message) >= ADVERSARIAL_CHARS
    started = time.perf_counter()
    extract_callback_urls(message)
    find_callback_problems(message)
    assert time.perf_counter() - started < LINEAR_BOUND_S


def test_value_longer_than_2048_characters_is_a_problem() -> None:
    url = "https://x.example/" + "a" * 2100
    message = f"circuit-breaker-callback: {url}"
    assert extract_callback_urls(message) == ()
    assert find_callback_problems(message) == [
        f'line 1: circuit-breaker-callback: "{url[:119]}\u2026" is longer than 2048 characters'
    ]


def test_value_of_2048_characters_is_read() -> None:
    url = "https://x.example/" + "a" * (2048 - len("https://x.example/"))
    assert extract_callback_urls(f"circuit-breaker-callback: {url}") == (url,)


def test_run_of_braces_is_a_problem_not_a_url() -> None:
    problems = find_callback_problems("circuit-breaker-callback: " + "{{" * 20)
    assert len(problems) == 1
    assert problems[0].startswith('line 1: circuit-breaker-callback: "{{{{')


def test_unbalanced_template_variable_is_a_problem() -> None:
    assert find_callback_problems("circuit-breaker-callback: https://x.example/{{a{b}}/cb") == [
        'line 1: circuit-breaker-callback: "https://x.example/{{a{b}}/cb" contains "{{", the '
        "start of a template variable: the router would call whatever Datadog renders there"
    ]


@pytest.mark.parametrize(
    ("urls", "expected"),
    [
        pytest.param(
            [
                "http://127.0.0.1/cb",
                "http://127.0.0.1:80/cb",
                "http://127.0.0.1/cb#x",
                "http://127.0.0.1./cb",
                "HTTP://127.0.0.1/cb",
            ],
            ("http://127.0.0.1/cb",),
            id="design-variants",
        ),
        pytest.param(
            ["http://127.0.0.1/cb#x", "http://127.0.0.1/cb"],
            ("http://127.0.0.1/cb",),
            id="first-seen-minus-fragment",
        ),
        pytest.param(
            ["HTTP://127.0.0.1.:80/cb", "http://127.0.0.1/cb"],
            ("HTTP://127.0.0.1.:80/cb",),
            id="first-seen-spelling-kept",
        ),
        pytest.param(
            ["https://a.example:443/cb", "https://A.Example./cb", "https://a.example:/cb"],
            ("https://a.example:443/cb",),
            id="https-default-port",
        ),
        pytest.param(
            ["https://a.example", "https://a.example/"],
            ("https://a.example",),
            id="empty-path-is-root",
        ),
        pytest.param(
            ["http://a.example:443/cb", "http://a.example/cb"],
            ("http://a.example:443/cb", "http://a.example/cb"),
            id="443-is-not-http-default",
        ),
        pytest.param(
            ["https://a.example:8443/cb", "https://a.example/cb"],
            ("https://a.example:8443/cb", "https://a.example/cb"),
            id="other-port-distinct",
        ),
        pytest.param(
            ["https://a.example/c%62", "https://a.example/cb", "https://a.example/c%42"],
            ("https://a.example/c%62", "https://a.example/cb", "https://a.example/c%42"),
            id="percent-encoding-untouched",
        ),
        pytest.param(
            ["https://a.example/cb?x=1", "https://a.example/cb?x=1#y", "https://a.example/cb"],
            ("https://a.example/cb?x=1", "https://a.example/cb"),
            id="query-kept-fragment-dropped",
        ),
    ],
)
def test_spellings_of_one_endpoint_dedup(urls: list[str], expected: tuple[str, ...]) -> None:
    message = "\n".join(f"circuit-breaker-callback: {url}" for url in urls)
    assert extract_callback_urls(message) == expected


SECRET = "s3cr3t-pass"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        pytest.param(
            f"https://svc:{SECRET}@a.example/cb", "https://***@a.example/cb", id="user-pass"
        ),
        pytest.param(f"https://{SECRET}@a.example/cb", "https://***@a.example/cb", id="user-only"),
        pytest.param(f"https://:{SECRET}@a.example/cb", "https://***@a.example/cb", id="pass-only"),
        pytest.param(
            f"HTTP://svc:{SECRET}@a.example:8080/cb", "HTTP://***@a.example:8080/cb", id="port"
        ),
        pytest.param(
            f"[cb](https://svc:{SECRET}@a.example/cb)", "https://***@a.example/cb", id="md-link"
        ),
        pytest.param(
            f"<https://svc:{SECRET}@a.example/cb|x>", "https://***@a.example/cb", id="slack"
        ),
        pytest.param(
            f"https://svc:{SECRET}@a.example/cb?x=1", "https://***@a.example/cb?x=1", id="query"
        ),
    ],
)
def test_a_url_with_credentials_is_refused_and_they_are_masked(value: str, shown: str) -> None:
    [found] = scan_callback_lines(f"circuit-breaker-callback: {value}")
    assert found.url is None and found.carries_credentials
    assert found.problem is not None
    assert SECRET not in found.problem and SECRET not in found.value
    assert found.problem == (
        f'circuit-breaker-callback: "{shown}" carries credentials (user:password@); the router '
        "never sends credentials in a URL: let the service verify the router's signature instead"
    )


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(
            f"circuit-breaker-callback: https://svc:{SECRET}@a.example/" + "x" * 3000, id="too-long"
        ),
        pytest.param(
            f"circuit-breaker-callback: https://svc:{SECRET}@a.example/{{{{x}}}}", id="template"
        ),
        pytest.param(
            f"circuit-breaker-callback: https://svc:{SECRET}@a.example:99999/", id="bad-port"
        ),
        pytest.param(f"circuit-breaker-callback: ftp://svc:{SECRET}@a.example/cb", id="ftp"),
        pytest.param(
            f"circuit-breaker-callback: https://svc:{SECRET}" + "x" * 200 + "@a.example/cb",
            id="long-userinfo",
        ),
    ],
)
def test_no_problem_text_echoes_credentials(message: str) -> None:
    [found] = scan_callback_lines(message)
    assert found.problem is not None and found.url is None
    assert SECRET not in found.problem and SECRET not in found.value
    assert SECRET not in " ".join(find_callback_problems(message))


def test_one_line_with_credentials_does_not_hide_the_other_lines() -> None:
    message = (
        f"circuit-breaker-callback: https://svc:{SECRET}@a.example/cb\n"
        f"circuit-breaker-callback: {CB}"
    )
    assert extract_callback_urls(message) == (CB,)
    [problem] = find_callback_problems(message)
    assert problem.startswith(
        'line 1: circuit-breaker-callback: "https://***@a.example/cb" carries'
    )


def test_an_at_sign_in_the_path_or_query_is_not_userinfo() -> None:
    urls = ("https://a.example/cb/@team", "https://a.example/cb?owner=ops@example.com")
    message = "\n".join(f"circuit-breaker-callback: {url}" for url in urls)
    assert extract_callback_urls(message) == urls
