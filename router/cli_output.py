"""How the `router` commands print: times in UTC, JSON for scripts."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click


def when(ms: int | None) -> str:
    """Epoch milliseconds as `2026-11-22 14:25:32Z`, or `-`."""
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))
