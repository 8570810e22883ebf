"""Find the `circuit-breaker-callback: <url>` lines in a rendered monitor message.

Datadog hands us the message as the user wrote it after rendering the conditionals, wrapped in
Markdown (`%%%`), sometimes with HTML entities from escaped template variables. Everything
here is about getting the URL the user meant out of that, or saying why there is none.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from router.config import DEFAULT_CALLBACK_KEYWORD

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
# A template that JSON-encodes `$EVENT_MSG` twice delivers `\n` as two characters.
_LITERAL_LINE_BREAK = re.compile(r"\\r\\n|\\r|\\n")
# Invisible characters that copy-paste from chat and docs leaves inside lines.
_INVISIBLE = re.compile("[\u200b\u200c\u200d\u2060\ufeff]")

# `[text](url)` or `[text](<url> "title")`; one level of balanced parentheses inside the URL.
_MARKDOWN_LINK = re.compile(
    r"\[[^\]]*\]\(\s*(?:<(?P<angled>[^<>]*)>|(?P<url>[^\s()]*(?:\([^\s()]*\)[^\s()]*)*))"
    r"(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)"
)
# `<url>`, and Slack's `<url|label>`.
_ANGLE_LINK = re.compile(r"<(?P<url>[^\s<>|]+)(?:\|[^<>]*)?>")
# A bare value runs to the next whitespace, except inside `{{ ... }}` so a whole template
# variable is reported rather than a fragment of it. `[^{}\n]*` rather than `.*?`: a scan from
# one `{{` stops at the next brace, so a run of `{{{{...` costs linear time, not quadratic.
_BARE_TOKEN = re.compile(r"(?:\{\{[^{}\n]*\}\}|\S)+")
_TEMPLATE_VARIABLE = re.compile(r"\{\{[^{}\n]*\}\}")
# No callback URL is this long; a longer value is a problem and no pattern is run on it.
MAX_VALUE_CHARS = 2048
# CommonMark: a backslash before ASCII punctuation is an escape for that character.
_MARKDOWN_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")
# What a JSON-escape leak leaves at the end of a URL: `https://x/cb\n%%%`.
_LEAKED_ESCAPE = re.compile(r"\\[nrt]")

_LEADING_WRAPPERS = "*_~`'\"\u201c\u201d\u2018\u2019"
# Sentence punctuation and Markdown emphasis are never the last character of a callback URL.
_TRAILING_NOISE = ".,;:!?'\"*~`>\u201c\u201d\u2018\u2019"
_CLOSERS = {")": "(", "]": "[", "}": "{"}
_HTTP_SCHEMES = ("http", "https")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# scheme, host, port, path, query
_EndpointKey = tuple[str, str, int | None, str, str]
# The userinfo of an authority (RFC 3986 3.2.1): from `//` to the last `@` before the path. Not
# stopped by `?` or `#`, so a malformed `user:p#ss@` is masked too; never crossing `/` or a space,
# each `//` is scanned once: linear time.
_USERINFO = re.compile(r"(?<=//)[^/\s]*@")
MASKED_USERINFO = "***@"
_CREDENTIALS = (
    "carries credentials (user:password@); the router never sends credentials in a URL: let "
    "the service verify the router's signature instead"
)


@dataclass(frozen=True)
class CallbackLine:
    """One `<keyword>: <value>` occurrence; exactly one of `url` and `problem` is set.

    `value` has any credentials masked; `carries_credentials` says the URL had them, which
    refuses the notification when no other line is usable (see `router.inbound`).
    """

    line: int
    value: str
    url: str | None
    problem: str | None
    carries_credentials: bool = False


def mask_credentials(text: str) -> str:
    """`text` with the userinfo of every URL in it replaced by `***`: safe to log or store."""
    return _USERINFO.sub(MASKED_USERINFO, text)


@lru_cache(maxsize=16)
def _keyword_pattern(keyword: str) -> re.Pattern[str]:
    # Not the tail of a longer word (`x-circuit-breaker-callback:`), though `_` may be emphasis;
    # emphasis may sit on either side of the colon (`**circuit-breaker-callback:**`, `_..._:`).
    return re.compile(rf"(?<![^\W_])(?<!-){re.escape(keyword)}[*_~]*\s*:[*_~]*", re.IGNORECASE)


# The web scans each message twice (parsing finds the URLs, accepting names the problems):
# the second is a hit. Results are immutable; a few entries cover a web process's threads.
_SCAN_CACHE_SIZE = 64


@lru_cache(maxsize=_SCAN_CACHE_SIZE)
def scan_callback_lines(
    message: str, keyword: str = DEFAULT_CALLBACK_KEYWORD
) -> tuple[CallbackLine, ...]:
    """Every keyword occurrence in `message`, in order, with its URL or why it has none."""
    if not keyword.strip():
        raise ValueError("the callback keyword must not be empty")
    pattern = _keyword_pattern(keyword.strip())
    if "\n" not in message and "\r" not in message:
        message = _LITERAL_LINE_BREAK.sub("\n", message)
    found: list[CallbackLine] = []
    for number, raw_line in enumerate(_LINE_BREAK.split(message), start=1):
        # Entities are decoded per line so that `&#10;` cannot shift the line numbers.
        line = html.unescape(_INVISIBLE.sub("", raw_line))
        matches = list(pattern.finditer(line))
        for index, match in enumerate(matches):
            end = matches[index + 1].start() if index + 1 < len(matches) else len(line)
            value = line[match.end() : end].strip()
            url, problem, credentials = _read_value(value, keyword.strip())
            found.append(CallbackLine(number, mask_credentials(value), url, problem, credentials))
    return tuple(found)


@lru_cache(maxsize=_SCAN_CACHE_SIZE)
def extract_callback_urls(message: str, keyword: str = DEFAULT_CALLBACK_KEYWORD) -> tuple[str, ...]:
    """The distinct usable callback URLs in `message`, in first-seen order."""
    return distinct_urls(scan_callback_lines(message, keyword))


def distinct_urls(lines: Iterable[CallbackLine]) -> tuple[str, ...]:
    """The usable URLs of `lines`, each once: spellings of the same endpoint count as one."""
    urls: dict[_EndpointKey, str] = {}
    for found in lines:
        if found.url is not None:
            urls.setdefault(_dedup_key(found.url), found.url)
    return tuple(urls.values())


def find_callback_problems(message: str, keyword: str = DEFAULT_CALLBACK_KEYWORD) -> list[str]:
    """One line per keyword occurrence whose value is not a usable URL, e.g. for a 202 body."""
    return describe_problems(scan_callback_lines(message, keyword))


def describe_problems(lines: Iterable[CallbackLine]) -> list[str]:
    """`line N: <problem>` for each of `lines` that has no usable URL."""
    return [f"line {found.line}: {found.problem}" for found in lines if found.problem is not None]


def _read_value(value: str, keyword: str) -> tuple[str | None, str | None, bool]:
    """The URL, or why there is none and whether that is because it carries credentials."""
    if not value:
        return None, f'nothing follows "{keyword}:"; put the URL on the same line', False
    if len(value) > MAX_VALUE_CHARS:
        limit = f"is longer than {MAX_VALUE_CHARS} characters"
        return None, f"{keyword}: {_quoted(value)} {limit}", False
    candidate = _unwrap(value)
    if not candidate:
        return None, f"{keyword}: {_quoted(value)} holds no URL", False
    problem = _url_problem(candidate)
    if problem:
        return None, f"{keyword}: {_quoted(candidate)} {problem}", problem is _CREDENTIALS
    # A fragment never reaches the server: `.../cb#x` is `.../cb`.
    return candidate.partition("#")[0], None, False


def _unwrap(value: str) -> str:
    """The URL inside Markdown links, angle brackets, backticks and emphasis."""
    stripped = value.lstrip(_LEADING_WRAPPERS)
    underscored = "_" in value[: len(value) - len(stripped)]
    for pattern in (_MARKDOWN_LINK, _ANGLE_LINK):
        link = pattern.match(stripped)
        if link:
            # An explicit link target is taken as written: its end is not sentence punctuation.
            target = link.group("url") if link.group("url") is not None else link.group("angled")
            return _MARKDOWN_ESCAPE.sub(r"\1", target.strip())
    token_match = _BARE_TOKEN.match(stripped.lstrip("[(<"))
    token = token_match.group(0) if token_match else ""
    token = _MARKDOWN_ESCAPE.sub(r"\1", token)
    leaked = _LEAKED_ESCAPE.search(token)
    if leaked:
        token = token[: leaked.start()]
    return _trim_trailing(token, underscored)


def _trim_trailing(token: str, underscored: bool) -> str:
    # Counted once and kept up to date, so a long run of closers costs linear time.
    counts = {char: token.count(char) for pair in _CLOSERS.items() for char in pair}
    end = len(token)
    while end:
        last = token[end - 1]
        if last == "%" and token.endswith("%%%", 0, end):
            end -= 3
        elif last in _TRAILING_NOISE or (underscored and last == "_"):
            end -= 1
        elif last in _CLOSERS and counts[last] > counts[_CLOSERS[last]]:
            # `(see https://x/cb)`: the closer belongs to the prose, not to the URL.
            counts[last] -= 1
            end -= 1
        else:
            break
    return token[:end]


def _url_problem(url: str) -> str | None:
    variable = _TEMPLATE_VARIABLE.search(url)
    if variable:
        return (
            f"contains the template variable {variable.group(0)}: the router would call "
            "whatever Datadog renders there"
        )
    if "{{" in url:
        return (
            'contains "{{", the start of a template variable: the router would call whatever '
            "Datadog renders there"
        )
    if "\\" in url:
        return "contains a backslash"
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme.lower() not in _HTTP_SCHEMES:
        return "is not an http(s) URL"
    if not parts.hostname:
        return "has no host"
    if "@" in parts.netloc:
        # Refused rather than stripped: the URL would end up in logs, dead-letter reasons and
        # the dashboard, and calling it without them would fail anyway.
        return _CREDENTIALS
    return None


def _dedup_key(url: str) -> _EndpointKey:
    """What identifies the endpoint `url` calls (RFC 3986 6.2.2-6.2.3 normalisation).

    Scheme and host are case-insensitive, a default port or an empty port is no port, a trailing
    dot ends the same host name, an empty path is `/` and the fragment is never sent. Path and
    query are compared as written (percent-encoding included). Usable URLs have no userinfo.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    port = parts.port
    if port == _DEFAULT_PORTS.get(scheme):
        port = None
    return (scheme, host, port, parts.path or "/", parts.query)


def _quoted(text: str, limit: int = 120) -> str:
    # Masked before it is shortened, so a cut inside the userinfo cannot reveal part of it.
    text = mask_credentials(text)
    shown = text if len(text) <= limit else text[: limit - 1] + "\u2026"
    return json.dumps(shown, ensure_ascii=False)
