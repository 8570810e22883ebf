"""Typed views of what the store holds: a breaker record, its state, a write's outcome, history.

Pure Python: records are parsed from the Redis hashes described in `router.client.store`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from router.keys import BreakerKeys

# What the monitor (or a callback handler) last said; stored in the record's `state` field.
MonitorState = Literal["closed", "open", "recovering"]
# What callers see: the monitor's state unless a person's override is in force.
State = Literal["closed", "open", "recovering", "forced_open", "forced_closed"]
Outcome = Literal["changed", "unchanged", "stale"]


def _int(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    return int(value)


@dataclass(frozen=True)
class Record:
    """One breaker's stored fields, as the write scripts left them (times in ms)."""

    name: str
    key: str | None
    state: str = "closed"
    reason: str = ""
    source: str = ""
    since_ms: int | None = None
    version: int | None = None
    ramp_ms: int = 0
    forced: str | None = None
    forced_reason: str = ""
    forced_by: str = ""
    forced_since_ms: int | None = None
    forced_until_ms: int | None = None
    updated_ms: int | None = None
    # Bumped by every write: lets a process keep the newest copy when two updates race.
    rev: int = 0

    @property
    def member(self) -> str:
        return BreakerKeys.member(self.name, self.key)

    @classmethod
    def from_hash(cls, member: str, fields: Mapping[str, str]) -> Record:
        name, key = BreakerKeys.split_member(member)
        return cls(
            name=name,
            key=key,
            state=fields.get("state") or "closed",
            reason=fields.get("reason", ""),
            source=fields.get("source", ""),
            since_ms=_int(fields.get("since_ms")),
            version=_int(fields.get("version")),
            ramp_ms=_int(fields.get("ramp_ms")) or 0,
            forced=fields.get("forced") or None,
            forced_reason=fields.get("forced_reason", ""),
            forced_by=fields.get("forced_by", ""),
            forced_since_ms=_int(fields.get("forced_since_ms")),
            forced_until_ms=_int(fields.get("forced_until_ms")),
            updated_ms=_int(fields.get("updated_ms")),
            rev=_int(fields.get("rev")) or 0,
        )

    @classmethod
    def from_flat(cls, member: str, flat: list[str]) -> Record:
        """From an HGETALL reply as a Lua script returns it: `[field, value, field, value, ...]`."""
        return cls.from_hash(member, dict(zip(flat[::2], flat[1::2], strict=True)))


@dataclass(frozen=True)
class BreakerState:
    """A breaker as callers see it at one instant (`state`), and what lies under an override."""

    name: str
    key: str | None
    state: State
    # Why it is in `state`, who said so and since when (the override's, while one is in force).
    reason: str
    source: str
    since_ms: int | None
    monitor_state: MonitorState
    monitor_reason: str
    monitor_source: str
    monitor_since_ms: int | None
    # Event time (ms) of the newest monitor write; older events are ignored.
    version: int | None
    forced: bool
    forced_by: str | None
    expires_at_ms: int | None
    # While recovering: the share of calls let through now (0..1) and when the ramp ends.
    ramp_share: float | None
    ramp_ends_at_ms: int | None
    updated_ms: int | None

    @property
    def open(self) -> bool:
        """True when no call goes through (open or forced open); a ramp is not open."""
        return self.state in ("open", "forced_open")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class WriteResult:
    """What one write did to one breaker: `stale` means an older event was ignored."""

    name: str
    key: str | None
    outcome: Outcome
    old_state: State
    new_state: State
    # The stored version after the write (the newer one when the write was stale).
    version: int | None
    # An override is in force, so callers do not see this monitor write until it ends.
    forced: bool

    @property
    def applied(self) -> bool:
        return self.outcome != "stale"

    @property
    def changed(self) -> bool:
        return self.outcome == "changed"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class HistoryEntry:
    """One change of one breaker, as the write scripts logged it."""

    id: str
    time_ms: int
    name: str
    key: str | None
    # open, close, snapshot_open, snapshot_close, force_open, force_closed, clear, override_expired
    action: str
    old_state: str
    new_state: str
    monitor_state: str
    reason: str
    source: str
    version: int | None
    forced: bool
    by: str | None
    expires_at_ms: int | None

    @classmethod
    def from_stream(cls, entry_id: str, fields: Mapping[str, str]) -> HistoryEntry:
        key = fields.get("key", "")
        return cls(
            id=entry_id,
            time_ms=_int(fields.get("time_ms")) or 0,
            name=fields.get("name", ""),
            key=key or None,
            action=fields.get("action", ""),
            old_state=fields.get("old_state", ""),
            new_state=fields.get("new_state", ""),
            monitor_state=fields.get("monitor_state", ""),
            reason=fields.get("reason", ""),
            source=fields.get("source", ""),
            version=_int(fields.get("version")),
            forced=fields.get("forced") == "1",
            by=fields.get("by") or None,
            expires_at_ms=_int(fields.get("expires_at_ms")),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
