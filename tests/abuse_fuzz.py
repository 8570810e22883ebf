"""Schemathesis against `/openapi.json`: every operation, valid and invalid requests, counted.

Shared by `tests/test_abuse_schemathesis.py` (a few hundred cases, in-process) and
`bench/abuse.py` (thousands, against gunicorn). Most cases carry the right credentials, so they
reach the parsers instead of stopping at a 401; the rest show that refusals are clean too.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisException, Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import content_type_conformance, status_code_conformance

from tests.support import INBOUND_TOKEN

ADMIN_TOKEN = "abuse-admin-token-0123456789abcdef"
# The description is honest about answers: each status and Content-Type it gives is listed.
CONFORMANCE = [status_code_conformance, content_type_conformance]
# A refusal a person can read: every 4xx from these paths is JSON naming the problem.
JSON_ERROR_PATHS = ("/webhooks/", "/api/")
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
# gunicorn refuses a request line or header past its limits (4094 / 8190 bytes) with its own
# HTML page, before the app sees it: counted apart, it is not the app's answer.
SERVER_LIMIT_STATUSES = frozenset({414, 431})
GUNICORN_PAGE = b"<html>\n  <head>\n    <title>"
SHOWN_CHARS = 200

Send = Callable[[Case, dict[str, str]], Any]


@dataclass
class FuzzReport:
    cases: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    unreadable_refusals: list[str] = field(default_factory=list)
    server_refusals: int = 0
    undescribed_answers: list[str] = field(default_factory=list)
    not_generated: list[str] = field(default_factory=list)

    @property
    def server_error_count(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def summary(self) -> str:
        counts = ", ".join(f"{status}: {n}" for status, n in sorted(self.statuses.items()))
        return (
            f"{self.cases} cases; statuses {counts}; 5xx: {self.server_error_count}; "
            f"4xx without a JSON error: {len(self.unreadable_refusals)}; refused by gunicorn "
            f"before the app (request line or headers too long): {self.server_refusals}; "
            f"answers the description does not list: {len(self.undescribed_answers)}"
        )


def credentials(path: str) -> dict[str, str]:
    if path.startswith("/webhooks/"):
        return {"Authorization": f"Bearer {INBOUND_TOKEN}"}
    if path.startswith("/api/"):
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    return {}


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "..."


def _describe(case: Case, status: int, body: bytes) -> str:
    return (
        f"{case.method} {_shown(case.formatted_path)} query={_shown(case.query)} "
        f"headers={_shown(case.headers)} body={_shown(case.body)} -> {status} {_shown(body)}"
    )


def _refusal_is_readable(body: bytes) -> bool:
    try:
        answer = json.loads(body)
    except ValueError:
        return False
    return (
        isinstance(answer, dict) and isinstance(answer.get("error"), str) and bool(answer["error"])
    )


def fuzz(
    document: dict[str, Any],
    send: Send,
    *,
    examples: int,
    randomize: bool = False,
) -> FuzzReport:
    """Run `examples` cases of each operation in each mode through `send`; count the answers."""
    report = FuzzReport()
    schema = schemathesis.openapi.from_dict(document)
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in MODES:
            try:
                strategy = operation.as_strategy(generation_mode=mode)
            except Exception as exc:  # a schemathesis limit, reported rather than hidden
                report.not_generated.append(
                    f"{operation.method.upper()} {operation.path} ({mode}): {exc}"
                )
                continue

            @settings(
                max_examples=examples,
                deadline=None,
                database=None,
                phases=[Phase.generate],
                derandomize=not randomize,
                verbosity=Verbosity.quiet,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy, authenticated=st.integers(0, 9).map(lambda n: n > 0))
            def one_case(case: Case, authenticated: bool) -> None:
                headers = credentials(case.operation.path) if authenticated else {}
                response = send(case, headers)
                status = int(response.status_code)
                body = response.content
                report.cases += 1
                report.statuses[status] += 1
                if status >= 500:
                    report.server_errors.append(_describe(case, status, body))
                elif status in SERVER_LIMIT_STATUSES or body.startswith(GUNICORN_PAGE):
                    report.server_refusals += 1
                    return
                try:
                    case.validate_response(response, checks=CONFORMANCE)
                except FailureGroup as failures:
                    titles = ", ".join(sorted({failure.title for failure in failures.exceptions}))
                    report.undescribed_answers.append(f"{titles}: {_describe(case, status, body)}")
                if (
                    400 <= status < 500
                    and case.operation.path.startswith(JSON_ERROR_PATHS)
                    and not _refusal_is_readable(body)
                ):
                    report.unreadable_refusals.append(_describe(case, status, body))

            name = f"{operation.method.upper()} {operation.path} ({mode})"
            try:
                one_case()
            except Unsatisfiable:  # nothing in it to get wrong: no path part, query or body
                report.not_generated.append(f"{name}: no such request exists")
            except HypothesisException as exc:
                report.not_generated.append(f"{name}: {exc!r}")
    return report
