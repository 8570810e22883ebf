"""Typed views of what the store holds: a breaker record, its state, a write's outcome, history.

Pure Python: records are parsed from the Redis hashes described in `breaker_client.store`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal

from breaker_client.keys import BreakerKeys

# What a group's status is right after a transition, for the group the notification is about.
# Part of the callback contract, so the router (which sends it) imports it from here.
STATUS_AFTER: dict[str, str] = {
    "alert": "Alert",
    "warning": "Warn",
    "recovery": "OK",
    "no_data": "No Data",
}

# What the monitor (or a callback handler) last said; stored in the record's `state` field.
MonitorState = Literal["closed", "open", "recovering"]
# What callers see: the monitor's state unless a person's override is in force.
State = Literal["closed", "open", "recovering", "forced_open", "forced_closed"]
Outcome = Literal["changed", "unchanged", "stale"]

# A `Record`'s fields as a plain tuple, in field order (`Record(*row)` rebuilds it): what a
# process's snapshot holds. The garbage collector stops tracking a tuple of plain values, so
# 100,000 breakers neither lengthen nor trigger the full collections that stall every thread.
RecordRow = tuple[
    str, str | None, str, str, str, int | None, int | None, int, str | None, str, str,
    int | None, int | None, int | None, int, int | None, str,
]  # fmt: skip
# Positions in a row of the fields read without building a `Record`.
ROW_STATE: Final = 2
ROW_FORCED: Final = 8
ROW_UPDATED_MS: Final = 13
ROW_REV: Final = 14
ROW_SHADOW_SINCE_MS: Final = 15


def row_from_hash(
    member: str, fields: Mapping[str, str], share: Callable[[str], str] | None = None
) -> RecordRow:
    """A record's row straight from its hash; `share` returns one object for equal texts,
    so rows read together hold each reason or source once."""
    name, key = BreakerKeys.split_member(member)
    get = fields.get
    text = share if share is not None else (lambda s: s)
    forced = get("forced") or None
    return (
        text(name),
        key,
        text(get("state") or "closed"),
        text(get("reason", "")),
        text(get("source", "")),
        _int(get("since_ms")),
        _int(get("version")),
        _int(get("ramp_ms")) or 0,
        forced and text(forced),
        text(get("forced_reason", "")),
        text(get("forced_by", "")),
        _int(get("forced_since_ms")),
        _int(get("forced_until_ms")),
        _int(get("updated_ms")),
        _int(get("rev")) or 0,
        _int(get("shadow_since_ms")),
        text(get("shadow_by", "")),
    )


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
    # Shadow mode (set by a person): the breaker follows its monitor but lets calls through.
    shadow_since_ms: int | None = None
    shadow_by: str = ""

    @property
    def member(self) -> str:
        return BreakerKeys.member(self.name, self.key)

    @classmethod
    def from_hash(cls, member: str, fields: Mapping[str, str]) -> Record:
        return cls(*row_from_hash(member, fields))

    def row(self) -> RecordRow:
        return (
            self.name,
            self.key,
            self.state,
            self.reason,
            self.source,
            self.since_ms,
            self.version,
            self.ramp_ms,
            self.forced,
            self.forced_reason,
            self.forced_by,
            self.forced_since_ms,
            self.forced_until_ms,
            self.updated_ms,
            self.rev,
            self.shadow_since_ms,
            self.shadow_by,
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
    # In shadow mode `is_open` lets every call through and counts those it would refuse
    # (`shadow` on the keyless breaker covers every key of the name too).
    shadow: bool = False
    shadow_by: str | None = None
    shadow_since_ms: int | None = None

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
    # When stale: the source of the newer event the breaker holds (monitor, event, delivery).
    newer_source: str | None = None

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
    # open, close, snapshot_open, snapshot_close, force_open, force_closed, clear,
    # override_expired, shadow_on, shadow_off; stale_open, stale_close: an older event
    # ignored (the state is unchanged)
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
    # For a stale entry: the newer event's time (ms) and source, which the ignored one lost to.
    newer_version: int | None = None
    newer_source: str | None = None

    @property
    def stale(self) -> bool:
        return self.action.startswith("stale_")

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
            newer_version=_int(fields.get("newer_version")),
            newer_source=fields.get("newer_source") or None,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
