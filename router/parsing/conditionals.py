"""Render a monitor message's `{{#is_alert}}`-style conditionals offline, for `router lint-message`.

Datadog renders these before the router sees the message, so the callback lines a service gets
depend on which blocks hold them. This evaluates the blocks for each transition the way
Datadog documents them and reports what each one yields, with line numbers of the source.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from router.config import DEFAULT_RECONCILE_INTERVAL_S, format_duration
from router.parsing.callbacks import CallbackLine, distinct_urls, scan_callback_lines

# The transitions a monitor notification can be rendered for. `alert` and `warning` are from OK;
# Warn->Alert and Alert->Warn are Datadog's own `is_warning_to_alert` / `is_alert_to_warning`.
LINT_TRANSITIONS: tuple[str, ...] = (
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
_RECOVERIES = frozenset({"alert_recovery", "warning_recovery", "no_data_recovery"})

# When each Datadog conditional variable is true (docs: monitors/notify/variables).
# `is_recovery` covers every recovery; a renotification here is one of a monitor still in Alert.
_TRUE_IN: dict[str, frozenset[str]] = {
    "is_alert": frozenset({"alert", "warning_to_alert", "renotify"}),
    "is_warning": frozenset({"warning", "alert_to_warning"}),
    "is_recovery": _RECOVERIES,
    "is_alert_recovery": frozenset({"alert_recovery"}),
    "is_warning_recovery": frozenset({"warning_recovery"}),
    "is_no_data": frozenset({"no_data"}),
    "is_no_data_recovery": frozenset({"no_data_recovery"}),
    "is_alert_to_warning": frozenset({"alert_to_warning"}),
    "is_warning_to_alert": frozenset({"warning_to_alert"}),
    "is_renotify": frozenset({"renotify"}),
    # Unknown is a monitor state none of the modelled transitions reaches.
    "is_unknown": frozenset(),
}
# These depend on the group's tags or the monitor's priority, which a message file does not have.
_UNKNOWABLE = frozenset({"is_match", "is_exact_match", "is_priority"})

# Raw blocks first (their content is not parsed), then comments, triple and double braces.
_TAG = re.compile(
    r"\{\{\{\{\s*raw\s*\}\}\}\}(?P<raw>.*?)(?:\{\{\{\{\s*/raw\s*\}\}\}\}|\Z)"
    r"|\{\{!--.*?--\}\}|\{\{!.*?\}\}"
    r"|\{\{\{.*?\}\}\}"
    r"|\{\{(?P<tag>.*?)\}\}",
    re.DOTALL,
)
_HANDLE = re.compile(r"(?<![\w@.-])@(?:webhook|sns)-[\w.-]+")

Mode = Callable[["_Section"], Literal["body", "else", "none"]]


@dataclass
class _Text:
    offset: int
    text: str


@dataclass
class _Section:
    name: str
    inverted: bool
    line: int
    tag: str
    body: list[_Text | _Section] = field(default_factory=list)
    otherwise: list[_Text | _Section] | None = None


@dataclass(frozen=True)
class TransitionLint:
    """What one transition's rendering of the message yields."""

    transition: str
    callback_urls: tuple[str, ...]
    handles: tuple[str, ...]
    problems: tuple[str, ...]


@dataclass(frozen=True)
class LintReport:
    """Per-transition callback URLs, plus what is wrong or worth knowing about the message."""

    keyword: str
    transitions: tuple[TransitionLint, ...]
    problems: tuple[str, ...]
    warnings: tuple[str, ...]
    notes: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data


class _Source:
    """The message with its line starts, so rendered text can be traced back to source lines."""

    def __init__(self, message: str) -> None:
        self.text = message.replace("\r\n", "\n").replace("\r", "\n")
        self._starts = [0] + [m.end() for m in re.finditer("\n", self.text)]

    def line_of(self, offset: int) -> int:
        return bisect_right(self._starts, offset)


def render_for(message: str, transition: str) -> str:
    """The message as Datadog would render it for `transition`; other `{{variables}}` stay."""
    mode = _mode_for(transition)
    nodes, _problems, _notes = _parse(_Source(message))
    return _joined(_render(nodes, mode))


def lint_message(
    message: str, keyword: str, *, reconcile_interval_s: float = DEFAULT_RECONCILE_INTERVAL_S
) -> LintReport:
    """Which callback URLs each transition yields, and what is wrong with the message.

    `reconcile_interval_s` (ROUTER_RECONCILE_INTERVAL) says how late the reconciler repairs
    a breaker that a missing callback line leaves open."""
    source = _Source(message)
    nodes, problems, notes = _parse(source)
    results: list[TransitionLint] = []
    for transition in LINT_TRANSITIONS:
        segments = _render(nodes, _mode_for(transition))
        found = _callback_lines(source, segments, keyword)
        results.append(
            TransitionLint(
                transition=transition,
                callback_urls=distinct_urls(callback for _line, callback in found),
                handles=tuple(dict.fromkeys(_HANDLE.findall(_joined(segments)))),
                problems=tuple(
                    f"line {line}: {callback.problem}"
                    for line, callback in found
                    if callback.problem is not None
                ),
            )
        )
    for result in results:
        problems.extend(p for p in result.problems if p not in problems)
    if not scan_callback_lines(source.text, keyword):
        problems.append(f'no "{keyword}:" line: no transition would call any service')
    return LintReport(
        keyword=keyword,
        transitions=tuple(results),
        problems=tuple(problems),
        warnings=tuple(_warnings(source, nodes, keyword, results, reconcile_interval_s)),
        notes=(*notes, *_coverage_notes(results)),
    )


def _warnings(
    source: _Source,
    nodes: list[_Text | _Section],
    keyword: str,
    results: list[TransitionLint],
    reconcile_interval_s: float,
) -> list[str]:
    warnings = [
        f"line {line}: this callback line is outside any conditional, so it fires on every "
        "transition, recoveries included; that is right only if the service reads the "
        "transition from the callback body"
        for line, _callback in _callback_lines(
            source, _render(nodes, lambda _section: "none"), keyword
        )
    ]
    by_name = {result.transition: result for result in results}
    # A lost edge is repaired once the reconciler has read the monitor: within two intervals.
    repaired = (
        f"closed only by the reconciler, within about 2 x ROUTER_RECONCILE_INTERVAL "
        f"({format_duration(2 * reconcile_interval_s)}), and only if the workers have "
        "DD_API_KEY and DD_APP_KEY"
    )
    for url in by_name["alert"].callback_urls:
        if url not in by_name["alert_recovery"].callback_urls:
            warnings.append(
                f"{url} is called on alert but not on alert_recovery: a breaker it opens is "
                f"{repaired}; add a {{{{#is_recovery}}}} callback line"
            )
        elif url not in by_name["warning_recovery"].callback_urls:
            warnings.append(
                f"{url} is called on alert_recovery but not on warning_recovery: a monitor "
                "with a warning threshold that falls back to Warn before it recovers sends "
                f"warning_recovery, so a breaker it opened is {repaired}; use "
                "{{#is_recovery}} (every recovery) for the recovery line, unless the monitor "
                "has no warning threshold"
            )
    unsent = [
        result.transition for result in results if result.callback_urls and not result.handles
    ]
    if unsent:
        warnings.append(
            f"on {', '.join(unsent)} the message has callback lines but names no @webhook-... "
            "or @sns-... handle, so Datadog sends it nowhere the router hears it"
        )
    return warnings


# What a transition that does not call an alert's callback means for the breaker it opened.
_UNCOVERED = {
    "warning": (
        "on warning (OK to Warn) it is not called: the breaker stays closed; to open on "
        "warnings, put the line in {{#is_warning}} too and list 'Warn' in apply_callback's "
        "open_statuses"
    ),
    "alert_to_warning": (
        "on alert_to_warning (Alert to Warn) it is not called: an open breaker stays open "
        "until a recovery (or the reconciler's snapshot, which closes it unless 'Warn' is in "
        "open_statuses)"
    ),
    "no_data": (
        "on no_data (the monitor stopped getting data) it is not called: the breaker keeps "
        "its state; to open on silence, put the line in {{#is_no_data}} too and list "
        "'No Data' in open_statuses"
    ),
    "renotify": (
        "on renotify (a reminder while the monitor still alerts) it is not called: harmless, "
        "the breaker is already open; {{#is_alert}} covers renotify"
    ),
}


def _coverage_notes(results: list[TransitionLint]) -> list[str]:
    """For each URL an alert calls, what each transition it misses means for its breaker."""
    by_name = {result.transition: result for result in results}
    notes = []
    for url in by_name["alert"].callback_urls:
        missed = [
            f"{url}: {meaning}"
            for transition, meaning in _UNCOVERED.items()
            if url not in by_name[transition].callback_urls
        ]
        notes.extend(missed)
    return notes


def _callback_lines(
    source: _Source, segments: list[tuple[int, str]], keyword: str
) -> list[tuple[int, CallbackLine]]:
    """Callback lines of one rendering, each with the source line it came from."""
    origins = _line_origins(source, segments)
    # `min`: a one-line message with literal `\n`s scans as several lines (see callbacks).
    return [
        (origins[min(found.line, len(origins)) - 1], found)
        for found in scan_callback_lines(_joined(segments), keyword)
    ]


def _joined(segments: list[tuple[int, str]]) -> str:
    return "".join(text for _offset, text in segments)


def _line_origins(source: _Source, segments: list[tuple[int, str]]) -> list[int]:
    """For each line of the rendered text, the source line its first character came from."""
    origins: list[int] = []
    pending = True
    for offset, text in segments:
        position = 0
        while position < len(text):
            if pending:
                origins.append(source.line_of(offset + position))
                pending = False
            newline = text.find("\n", position)
            if newline < 0:
                break
            pending = True
            position = newline + 1
    if pending or not origins:
        origins.append(origins[-1] if origins else 1)
    return origins


def _mode_for(transition: str) -> Mode:
    if transition not in LINT_TRANSITIONS:
        raise ValueError(
            f"unknown transition {transition!r}; expected one of {', '.join(LINT_TRANSITIONS)}"
        )

    def mode(section: _Section) -> Literal["body", "else", "none"]:
        if section.name in _UNKNOWABLE:
            return "body"
        holds = transition in _TRUE_IN.get(section.name, frozenset())
        return "body" if holds != section.inverted else "else"

    return mode


def _render(nodes: list[_Text | _Section], mode: Mode) -> list[tuple[int, str]]:
    """The rendered text as (source offset, text) segments, in order."""
    out: list[tuple[int, str]] = []
    for node in nodes:
        if isinstance(node, _Text):
            out.append((node.offset, node.text))
            continue
        branch = mode(node)
        if branch == "body":
            out.extend(_render(node.body, mode))
        elif branch == "else" and node.otherwise is not None:
            out.extend(_render(node.otherwise, mode))
    return out


def _parse(source: _Source) -> tuple[list[_Text | _Section], list[str], list[str]]:
    """The block tree of the message, with problems and notes found on the way."""
    problems: list[str] = []
    notes: list[str] = []
    root: list[_Text | _Section] = []
    stack: list[_Section] = []

    def target() -> list[_Text | _Section]:
        if not stack:
            return root
        top = stack[-1]
        return top.otherwise if top.otherwise is not None else top.body

    position = 0
    for match in _TAG.finditer(source.text):
        if match.start() > position:
            target().append(_Text(position, source.text[position : match.start()]))
        position = match.end()
        line = source.line_of(match.start())
        if match.group("raw") is not None:
            target().append(_Text(match.start("raw"), match.group("raw")))
            continue
        inner = match.group("tag")
        if inner is None:  # a comment, or a `{{{variable}}}` that stays as written
            if not match.group(0).startswith("{{!"):
                target().append(_Text(match.start(), match.group(0)))
            continue
        tag = inner.strip().strip("~").strip()
        words = tag[1:].split(maxsplit=1)
        name = words[0] if words else ""
        if tag.startswith("else "):
            problems.append(
                f"line {line}: {match.group(0)}: Datadog documents only a plain {{{{else}}}}; "
                "treated as one"
            )
            tag = "else"
        if tag in ("else", "^"):
            if not stack:
                problems.append(f"line {line}: {{{{{tag}}}}} outside any block")
            elif stack[-1].otherwise is not None:
                problems.append(f"line {line}: second {{{{{tag}}}}} in {stack[-1].tag}")
            else:
                stack[-1].otherwise = []
        elif tag[:1] in ("#", "^"):
            section = _Section(name, tag[0] == "^", line, match.group(0))
            target().append(section)
            stack.append(section)
            _check_opener(section, problems, notes)
        elif tag[:1] == "/":
            _close(stack, name, match.group(0), line, problems)
        else:  # a variable: Datadog fills it in, so it stays as written here
            target().append(_Text(match.start(), match.group(0)))
    target().append(_Text(position, source.text[position:]))
    for section in reversed(stack):
        problems.append(f"line {section.line}: {section.tag} is never closed")
    return root, problems, notes


def _check_opener(section: _Section, problems: list[str], notes: list[str]) -> None:
    if section.name in _UNKNOWABLE:
        notes.append(
            f"line {section.line}: {section.tag} depends on tags or priority this lint cannot "
            "see; its block is treated as included"
        )
    elif section.name not in _TRUE_IN:
        problems.append(
            f"line {section.line}: {section.tag} is not a Datadog conditional variable, so "
            f"Datadog treats it as false; known ones: {', '.join(sorted(_TRUE_IN))}"
        )
    elif section.name == "is_unknown":
        notes.append(f"line {section.line}: {section.tag} is never true in these transitions")


def _close(stack: list[_Section], name: str, tag: str, line: int, problems: list[str]) -> None:
    """Close the innermost open block named `name`; what that skips over was never closed."""
    if name not in [section.name for section in stack]:
        innermost = f" ({stack[-1].tag} from line {stack[-1].line} is open)" if stack else ""
        problems.append(f"line {line}: {tag} closes no open block{innermost}")
        return
    while stack:
        section = stack.pop()
        if section.name == name:
            return
        problems.append(f"line {section.line}: {section.tag} is never closed before {tag}")
