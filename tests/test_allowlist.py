"""ROUTER_CALLBACK_ALLOW: URLs are compared by parts, never as plain string prefixes."""

from __future__ import annotations

import pytest

from router.allowlist import CallbackAllowList

SVC = "https://svc.internal/breaker"


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        # same scheme, host and port; path at or under /breaker
        ("https://svc.internal/breaker", True),
        ("https://svc.internal/breaker/", True),
        ("https://svc.internal/breaker/callback", True),
        ("https://svc.internal/breaker/callback?bank=0001#x", True),
        ("https://svc.internal:443/breaker/callback", True),  # the default port, spelled out
        # path: a sibling or a parent is not under the prefix
        ("https://svc.internal/breakerx", False),
        ("https://svc.internal/breaker-admin/x", False),
        ("https://svc.internal/", False),
        ("https://svc.internal", False),
        ("https://svc.internal/admin", False),
        ("https://svc.internal/Breaker/callback", False),  # paths are case-sensitive
        # scheme and port must match
        ("http://svc.internal/breaker/callback", False),
        ("https://svc.internal:8443/breaker/callback", False),
        ("http://svc.internal:443/breaker/callback", False),
        # host must match exactly
        ("https://svc.internal.evil.com/breaker/callback", False),
        ("https://evil-svc.internal/breaker/callback", False),
        ("https://api.svc.internal/breaker/callback", False),
        ("https://svc.internal./breaker/callback", False),
        # userinfo tricks: the host is what follows the last @
        ("https://svc.internal@evil.com/breaker/callback", False),
        ("https://svc.internal:443@evil.com/breaker/callback", False),
        ("https://svc.internal%40evil.com/breaker/callback", False),
        # dot segments that an HTTP client would resolve out of the prefix
        ("https://svc.internal/breaker/../admin", False),
        ("https://svc.internal/breaker/./callback", False),
        ("https://svc.internal/breaker/%2e%2e/admin", False),
        ("https://svc.internal/breaker/%2E%2E/admin", False),
        ("https://svc.internal/breaker/.%2e/admin", False),
        ("https://svc.internal/breaker/..", False),
        # case of scheme and host does not matter
        ("https://SVC.INTERNAL/breaker/callback", True),
        ("HTTPS://Svc.Internal/breaker/callback", True),
        # not http(s), or no host at all
        ("ftp://svc.internal/breaker/callback", False),
        ("file:///breaker/callback", False),
        ("javascript:alert(1)", False),
        ("//svc.internal/breaker/callback", False),
        ("svc.internal/breaker/callback", False),
        ("https:///breaker/callback", False),
        ("", False),
        # ports that are not a number in range
        ("https://svc.internal:99999/breaker/callback", False),
        ("https://svc.internal:-1/breaker/callback", False),
        ("https://svc.internal:abc/breaker/callback", False),
    ],
)
def test_allows_against_a_path_prefix_without_trailing_slash(url, allowed):
    assert CallbackAllowList((SVC,)).allows(url) is allowed


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://svc.internal/breaker/", True),
        ("https://svc.internal/breaker/callback", True),
        ("https://svc.internal/breaker/a/b", True),
        ("https://svc.internal/breaker", False),  # the prefix is `/breaker/`, this is not under it
        ("https://svc.internal/breakerx", False),
    ],
)
def test_allows_against_a_path_prefix_with_trailing_slash(url, allowed):
    assert CallbackAllowList((SVC + "/",)).allows(url) is allowed


@pytest.mark.parametrize(
    ("prefix", "url", "allowed"),
    [
        # no path, or `/`: anything on that origin
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/any/path", True),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080", True),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080/cb", True),
        ("http://127.0.0.1:8080", "http://127.0.0.1/cb", False),  # port 80
        ("http://127.0.0.1:8080", "http://127.0.0.1:8081/cb", False),
        ("http://127.0.0.1:8080", "http://127.0.0.2:8080/cb", False),
        ("http://127.0.0.1:8080", "http://127.0.0.1.nip.io:8080/cb", False),
        # default ports on either side
        ("http://svc.internal/", "http://svc.internal:80/cb", True),
        ("http://svc.internal:80/", "http://svc.internal/cb", True),
        ("https://svc.internal:443/", "https://svc.internal/cb", True),
        ("http://svc.internal/", "http://svc.internal:8080/cb", False),
        # the prefix's host case does not matter either
        ("https://SVC.internal/breaker", "https://svc.internal/breaker/cb", True),
        # IPv6 literals
        ("http://[::1]:8080/cb", "http://[::1]:8080/cb/x", True),
        ("http://[::1]:8080/cb", "http://[::1]:8080/cb", True),
        ("http://[::1]:8080/cb", "http://[::1]/cb", False),
        ("http://[::1]:8080/cb", "http://[::2]:8080/cb", False),
        ("http://[::1]:8080/cb", "http://[::1]:8080/other", False),
        ("http://[fd00::5]/", "http://[FD00::5]/cb", True),
        ("http://[fd00::5]/", "http://fd00::5/cb", False),
    ],
)
def test_allows_compares_origin_parts(prefix, url, allowed):
    assert CallbackAllowList((prefix,)).allows(url) is allowed


def test_any_of_several_prefixes_admits():
    allow = CallbackAllowList(("https://a.internal/breaker/", "http://127.0.0.1:9000/cb"))
    assert allow.allows("https://a.internal/breaker/x")
    assert allow.allows("http://127.0.0.1:9000/cb/y")
    assert not allow.allows("https://b.internal/breaker/x")
    assert not allow.allows("http://127.0.0.1:9000/other")


def test_an_empty_allow_list_admits_nothing():
    assert CallbackAllowList(()).allows("https://svc.internal/breaker") is False


def test_port_zero_is_not_the_default_port():
    assert CallbackAllowList((SVC,)).allows("https://svc.internal:0/breaker/callback") is False


@pytest.mark.parametrize("url", ["http://[::1/breaker", "http://[not-an-ip]/breaker"])
def test_a_malformed_ipv6_url_is_refused_not_raised(url):
    assert CallbackAllowList(("http://[::1]/",)).allows(url) is False


def test_refusal_names_the_url_the_variable_and_the_prefixes():
    allow = CallbackAllowList(("https://a.internal/breaker/", "http://127.0.0.1:9000"))
    url = "https://evil.example/x"
    assert allow.refusal(url) == (
        "callback URL https://evil.example/x is not under any ROUTER_CALLBACK_ALLOW prefix "
        "(https://a.internal/breaker/, http://127.0.0.1:9000); no request was made"
    )


def test_refusal_says_when_no_prefix_is_set():
    refusal = CallbackAllowList(()).refusal("https://svc.internal/cb")
    assert "ROUTER_CALLBACK_ALLOW" in refusal
    assert "(none set)" in refusal


@pytest.mark.parametrize(
    ("url", "why"),
    [
        # servers that read `\` as `/` (IIS, WHATWG URL parsers) would resolve these out
        ("https://svc.internal/breaker/..\\admin", "backslash"),
        ("https://svc.internal/breaker\\..\\admin", "backslash"),
        ("https://svc.internal/breaker/%5c..%5cadmin", "backslash"),
        # path parameters: Tomcat and Spring read `/breaker/..;/admin` as `/admin`
        ("https://svc.internal/breaker/..;/admin", '";"'),
        ("https://svc.internal/breaker/callback;jsessionid=x", '";"'),
        ("https://svc.internal/breaker/%3b/x", '";"'),
        # encoded slashes: a server that decodes them sees other segments than we checked
        ("https://svc.internal/breaker/%2f..%2fadmin", "encoded slash"),
        ("https://svc.internal/breaker/a%2Fb", "encoded slash"),
        # encoded dot segments, once or twice encoded, in any case mix
        ("https://svc.internal/breaker/%2e%2e/admin", "dot segment"),
        ("https://svc.internal/breaker/%2E./admin", "dot segment"),
        ("https://svc.internal/breaker/.%2e/admin", "dot segment"),
        ("https://svc.internal/breaker/%2e/callback", "dot segment"),
        ("https://svc.internal/breaker/%252e%252e/admin", "dot segment"),
        ("https://svc.internal/breaker/%252E%252e%252fadmin", "encoded slash"),
        ("https://svc.internal/breaker/%25252e%25252e/admin", "percent-encoded"),
    ],
)
def test_paths_a_server_could_read_outside_the_prefix_are_refused_with_the_reason(url, why):
    allow = CallbackAllowList((SVC,))
    assert allow.allows(url) is False
    refusal = allow.refusal(url)
    assert why in refusal, refusal
    assert "no request was made" in refusal


@pytest.mark.parametrize(
    "url",
    [
        "https://svc.internal/breaker/callback?x=a;b",  # `;` in the query is not a path parameter
        "https://svc.internal/breaker/call%20back",
        "https://svc.internal/breaker/100%25",
        "https://svc.internal/breaker/.well-known/x",
        "https://svc.internal/breaker/..x",
    ],
)
def test_ordinary_encoded_paths_under_the_prefix_still_pass(url):
    assert CallbackAllowList((SVC,)).allows(url) is True


@pytest.mark.parametrize(
    "url",
    [
        "https://svc:s3cr3t-pass@svc.internal/breaker/callback",
        "https://s3cr3t-pass@svc.internal/breaker/callback",
        "https://:s3cr3t-pass@svc.internal/breaker/callback",
    ],
)
def test_a_url_with_credentials_is_refused_and_the_refusal_masks_them(url):
    allow = CallbackAllowList((SVC,))
    assert allow.allows(url) is False
    refusal = allow.refusal(url)
    assert "s3cr3t-pass" not in refusal
    assert "https://***@svc.internal/breaker/callback" in refusal
    assert "credentials" in refusal
