"""A request body as a JSON object, or a PayloadError saying why not."""

from __future__ import annotations

import json
from typing import Any

from router.errors import PayloadError

# No sender's payload nests more than a few levels (Datadog, SNS, Alertmanager: at most 5).
# Deeper is an attack on the stack of whatever walks the value later (storing, rendering,
# logging it), so it is refused here, where the answer can still say why.
MAX_JSON_DEPTH = 32


def _deeper_than(data: Any, limit: int) -> bool:
    """Whether arrays and objects in `data` nest more than `limit` levels; no recursion."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children = list(value.values())
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _too_deep(what: str) -> PayloadError:
    return PayloadError(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels", status=400)


def refuse_json_of_another_type(raw: bytes, content_type: str | None) -> None:
    """A 415 naming the header to add, for a JSON object sent as another Content-Type.

    `curl -d @payload.json` sends form encoding unless told otherwise; read as a form, the JSON
    would be one odd key and the answer would blame a missing field instead of the header.
    """
    if raw.lstrip()[:1] == b"{":
        raise PayloadError(
            f"the body is JSON but its Content-Type is {content_type or 'not set'}: send it as "
            "application/json (with curl: -H 'Content-Type: application/json')",
            status=415,
        )


def parse_json_object(raw: bytes, *, what: str, not_object_status: int = 422) -> dict[str, Any]:
    """Decode `raw`; refuse what is not a JSON object or cannot be stored and re-sent as UTF-8."""
    try:
        data = json.loads(raw)
    except RecursionError:
        raise _too_deep(what) from None  # deeper than the decoder's own stack allows
    except ValueError as exc:
        # Bad UTF-8, bad JSON and integers past Python's digit limit.
        raise PayloadError(f"{what} is not valid JSON: {exc}", status=400) from None
    # Nesting deeper than the limit needs more brackets than that: most bodies skip the walk.
    if raw.count(b"{") + raw.count(b"[") > MAX_JSON_DEPTH and _deeper_than(data, MAX_JSON_DEPTH):
        raise _too_deep(what)
    if not isinstance(data, dict):
        raise PayloadError(
            f"{what} must be a JSON object, not a JSON {type(data).__name__}",
            status=not_object_status,
        )
    if b"\\u" not in raw and b"\0" not in raw:
        # Only an escape makes a lone surrogate: UTF-8 cannot hold one. (UTF-16 and UTF-32,
        # which json.loads also reads, spell the escape with NUL bytes between.)
        return data
    try:
        # A lone surrogate escape ("\ud800") decodes but can never be encoded again: it would
        # be accepted now and break signing or storage later.
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, ValueError, RecursionError) as exc:
        raise PayloadError(
            f"{what} holds text that is not valid Unicode (e.g. a lone \\ud800 escape): {exc}",
            status=400,
        ) from None
    return data
