"""Writing breakers: the monitor's open/close/snapshot and a person's overrides.

`BreakerWriter` is the writing half of `Breakers` (split out to keep modules small). Every
write is one Lua script in Redis (`breaker_client.store`); the process that wrote applies the
result to its own snapshot at once, so it reads its own writes before the channel delivers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from breaker_client.model import Record, WriteResult
from breaker_client.store import Action, GroupAuthority, Store
from breaker_client.sync import Snapshot

# Group statuses that open a breaker in `apply_snapshot` when given status strings.
DEFAULT_OPEN_STATUSES: frozenset[str] = frozenset({"Alert"})

# A snapshot's keys: `str`, or `str | None` to include the keyless breaker. A type variable
# because `Mapping` keys are invariant: a `dict[str, str]` must be accepted as it is.
SnapshotKey = TypeVar("SnapshotKey", bound=str | None)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class GroupStatus:
    """What one monitor group's status was at `version` (event ms), for `apply_groups`.

    `notified`: the notification about this very group says so (it wins over an entry as new
    as it); otherwise a monitor read does (only over older entries). `status=None` says only
    that the group exists now.
    """

    group: str
    status: str | None
    version: int | None
    notified: bool = False

    @property
    def authority(self) -> GroupAuthority:
        if self.status is None:
            return "seen"
        return "event" if self.notified else "read"


def check_target(name: str, key: str | None) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"breaker name must be letters, digits, '_', '.' or '-' (no ':'), got {name!r}"
        )
    if key is not None and (not isinstance(key, str) or key == ""):
        raise ValueError(f"breaker key must be None or a non-empty string, got {key!r}")


def check_version(version: int | None) -> None:
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
        raise ValueError(f"version must be the event time in ms (an int), got {version!r}")


class BreakerWriter:
    """Write methods of `Breakers`; they raise `BreakerStoreUnavailable` when Redis is down."""

    ramp_window: float
    _store: Store
    _snap: Snapshot
    _clock: Callable[[], float]

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def open(
        self,
        name: str,
        key: str | None = None,
        *,
        reason: str,
        version: int | None = None,
        source: str | None = None,
    ) -> WriteResult:
        """Open a breaker (a monitor alert); an event older than the stored `version` is ignored."""
        return self._write(name, key, "open", reason=reason, version=version, source=source)

    def close(
        self,
        name: str,
        key: str | None = None,
        *,
        reason: str,
        version: int | None = None,
        source: str | None = None,
        ramp: bool = True,
    ) -> WriteResult:
        """Close a breaker (a recovery). With `ramp` an open breaker goes `recovering` first,
        letting a growing share of calls through over `ramp_window`; `ramp=False` closes at once."""
        ramp_ms = int(self.ramp_window * 1000) if ramp else 0
        return self._write(
            name, key, "close", reason=reason, version=version, source=source, ramp_ms=ramp_ms
        )

    def apply_snapshot(
        self,
        name: str,
        states: Mapping[SnapshotKey, bool | str],
        *,
        reason: str,
        version: int | None = None,
        source: str | None = None,
        open_statuses: frozenset[str] | set[str] = DEFAULT_OPEN_STATUSES,
        ramp: bool = True,
        versions: Mapping[SnapshotKey, int | None] | None = None,
        owner: str | None = None,
    ) -> list[WriteResult]:
        """Make breaker `name` match a monitor's groups in one atomic step.

        `states` maps each key (None = the keyless breaker) to True/False or a group status
        (`Alert` opens by default, see `open_statuses`). Each key obeys its version on its own
        (`versions[key]`, else `version`): a key holding a newer event keeps it. Keyed
        breakers of `name` that are not listed are closed, unless `owner` is given: then only
        those whose source starts with it (e.g. `monitor:123 `), so several monitors can feed
        one breaker name. The keyless one is touched only when listed.
        """
        check_target(name, None)
        items: list[tuple[str | None, bool, int | None]] = []
        for key, value in states.items():
            check_target(name, key)
            is_open = value in open_statuses if isinstance(value, str) else bool(value)
            items.append((key, is_open, (versions or {}).get(key, version)))
        ramp_ms = int(self.ramp_window * 1000) if ramp else 0
        done = self._store.snapshot(
            name,
            items,
            now_ms=self._now_ms(),
            reason=reason,
            source=source or "",
            version=version,
            ramp_ms=ramp_ms,
            owner=owner or "",
        )
        for _, record in done:
            self._snap.apply(record)
        return [result for result, _ in done]

    def apply_groups(
        self,
        name: str,
        groups: Sequence[GroupStatus],
        *,
        reason: str,
        source: str | None = None,
        open_statuses: frozenset[str] | set[str] = DEFAULT_OPEN_STATUSES,
        ramp: bool = True,
        complete_as_of: int | None = None,
    ) -> WriteResult:
        """Drive keyless breaker `name` from per-group statuses, each ordered by its own version.

        Redis keeps one entry per group; the breaker is open while some entry's status is in
        `open_statuses`. An observation older than its group's entry is ignored (`stale` when
        all are), so a lagging read of one group cannot outrank a newer event of it. With
        `complete_as_of`, `groups` lists every group the monitor has as of that time (ms):
        a stored group missing from it, last known before then, is gone and no longer counts.
        """
        check_target(name, None)
        for observed in groups:
            check_version(observed.version)
        written = self._store.groups(
            name,
            [(g.group, g.status or "", g.version, g.authority) for g in groups],
            now_ms=self._now_ms(),
            reason=reason,
            source=source or "",
            ramp_ms=int(self.ramp_window * 1000) if ramp else 0,
            open_statuses=open_statuses,
            seen_ms=complete_as_of,
        )
        return self._apply(written)

    def force_open(
        self,
        name: str,
        key: str | None = None,
        *,
        reason: str,
        by: str,
        expires_in: float | None = None,
    ) -> WriteResult:
        """A person holds the breaker open; monitor writes are recorded, and seen once it ends."""
        return self._force(name, key, "force_open", reason=reason, by=by, expires_in=expires_in)

    def force_close(
        self,
        name: str,
        key: str | None = None,
        *,
        reason: str,
        by: str,
        expires_in: float | None = None,
    ) -> WriteResult:
        """A person holds the breaker closed (calls go through) until cleared or `expires_in` s."""
        return self._force(name, key, "force_closed", reason=reason, by=by, expires_in=expires_in)

    def clear_override(
        self, name: str, key: str | None = None, *, reason: str, by: str
    ) -> WriteResult:
        """End a person's override now; the breaker shows the monitor's latest state again."""
        check_target(name, key)
        return self._apply(
            self._store.write(name, key, "clear", now_ms=self._now_ms(), reason=reason, by=by)
        )

    def set_shadow(
        self, name: str, key: str | None = None, *, on: bool, by: str, reason: str = ""
    ) -> WriteResult:
        """Put a breaker in shadow mode (`on=True`) or take it out. In shadow mode it follows
        its monitor as usual, but `is_open` answers False and counts each call it would have
        refused; on the keyless breaker it covers every key of `name`. A person's forced
        open still refuses. Recorded in the history as `shadow_on` / `shadow_off`."""
        check_target(name, key)
        if not by:
            raise ValueError("shadow mode needs `by`: who is setting it")
        action: Action = "shadow_on" if on else "shadow_off"
        reason = reason or ("shadow mode on" if on else "shadow mode off")
        return self._apply(
            self._store.write(name, key, action, now_ms=self._now_ms(), reason=reason, by=by)
        )

    def _force(
        self,
        name: str,
        key: str | None,
        action: Action,
        *,
        reason: str,
        by: str,
        expires_in: float | None,
    ) -> WriteResult:
        check_target(name, key)
        if not by:
            raise ValueError("a forced state needs `by`: who is forcing it")
        if expires_in is not None and expires_in <= 0:
            raise ValueError(f"expires_in must be positive seconds or None, got {expires_in}")
        now_ms = self._now_ms()
        until_ms = None if expires_in is None else now_ms + int(expires_in * 1000)
        written = self._store.write(
            name, key, action, now_ms=now_ms, reason=reason, by=by, until_ms=until_ms
        )
        return self._apply(written)

    def _write(
        self,
        name: str,
        key: str | None,
        action: Action,
        *,
        reason: str,
        version: int | None,
        source: str | None,
        ramp_ms: int = 0,
    ) -> WriteResult:
        check_target(name, key)
        check_version(version)
        written = self._store.write(
            name,
            key,
            action,
            now_ms=self._now_ms(),
            reason=reason,
            source=source or "",
            version=version,
            ramp_ms=ramp_ms,
        )
        return self._apply(written)

    def _apply(self, written: tuple[WriteResult, Record]) -> WriteResult:
        result, record = written
        # Read your own writes: this process sees the change before the channel delivers it.
        self._snap.apply(record)
        return result
