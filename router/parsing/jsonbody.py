"""A request body as a JSON object, or a PayloadError saying why not."""

from __future__ import annotations

import json
from typing import Any

from router.errors import PayloadError


def parse_json_object(raw: bytes, *, what: str, not_object_status: int = 422) -> dict[str, Any]:
    """Decode `raw`; refuse what is not a JSON object or cannot be stored and re-sent as UTF-8."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        # ValueError covers bad UTF-8, bad JSON and integers past Python's digit limit;
        # RecursionError, absurdly deep nesting.
        raise PayloadError(f"{what} is not valid JSON: {exc}", status=400) from None
    if not isinstance(data, dict):
        raise PayloadError(
            f"{what} must be a JSON object, not a JSON {type(data).__name__}",
            status=not_object_status,
        )
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
