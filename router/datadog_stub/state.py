"""What the stub Datadog API knows and how it answers; pure Python (no Flask), thread-safe.

`StubState.handle` decides the answer to one API request; the Flask app only translates.
Bodies come from recorded fixtures (see `fixtures/SOURCES.md`); `state.groups` follows the
OpenAPI `MonitorState`/`MonitorStateGroup` schemas because no recording of it exists.
"""

from __future__ import annotations

import copy
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from router.errors import RouterError

FIXTURES = Path(__file__).with_name("fixtures")

# The entities the recorded fixtures describe; served verbatim after every reset.
RECORDED_MONITOR_ID = 155844758
RECORDED_EVENT_ID = 5938431024928355124

# `MonitorOverallStates` in the OpenAPI spec: the only values a group status or overall state has.
MONITOR_STATES = frozenset({"Alert", "Ignored", "No Data", "OK", "Skipped", "Unknown", "Warn"})
# GetMonitor's `group_states` values and the group status each selects (None: every group).
GROUP_STATE_FILTERS: dict[str, str | None] = {
    "all": None,
    "alert": "Alert",
    "warn": "Warn",
    "no data": "No Data",
}
# Worst first: a multi-alert monitor's overall state is the state of its worst group.
_SEVERITY = ("Alert", "Warn", "No Data", "Unknown", "OK", "Skipped", "Ignored")

# Default query of a defined monitor: a by-group metric monitor like the services use.
_DEFAULT_QUERY = "avg(last_5m):sum:vendor.errors{*} by {bank_code,env}.as_count() > 10"

_FORBIDDEN = {"errors": ["Forbidden"]}
_UNAUTHORIZED = {"errors": ["Unauthorized"]}
_TOO_MANY = {"errors": ["Too many requests"]}
_SERVER_ERROR = {"errors": ["Internal Server Error"]}
_UNKNOWN_PATH = {"errors": ["Not found"]}


class StubSpecError(RouterError):
    """A control request (monitor, event, fault, key or limit definition) is malformed (400)."""


@cache
def _fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text()


def load_fixture(name: str) -> Any:
    """A recorded body, as a fresh object (callers may change it)."""
    return json.loads(_fixture_text(name))


@dataclass(frozen=True)
class RateLimit:
    name: str
    limit: int
    period_s: int


# Datadog's limits as recorded (`get_monitors` 3000 per 10 s, event reads 12000 per 60 s); the
# event and search names and the search limit are not recorded (see fixtures/SOURCES.md).
DEFAULT_RATE_LIMITS: dict[str, RateLimit] = {
    "get_monitors": RateLimit("get_monitors", 3000, 10),
    "get_event": RateLimit("get_event", 12000, 60),
    "monitor_groups_search": RateLimit("monitor_groups_search", 3000, 10),
}


@dataclass(frozen=True)
class Answer:
    """One API answer; the app waits `delay_s` (outside any lock) before sending it."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class Fault:
    """Scripted misbehaviour for the next `times` requests whose path starts with `path`."""

    path: str
    status: int | None = None
    reset_s: int | None = None
    sleep_s: float = 0.0
    times: int | None = 1  # None: until reset
    body: Any = None


@dataclass
class _Event:
    body: dict[str, Any]
    not_found_calls: int = 0
    readable_at: float = 0.0


@dataclass
class _Monitor:
    body: dict[str, Any]
    groups: dict[str, dict[str, Any]]
    recorded: bool = False


@dataclass
class _Window:
    started: float
    used: int = 0


def _as_id(value: Any, what: str) -> int:
    text = str(value).strip()
    if not text.isdigit():
        raise StubSpecError(f"{what}: expected a positive integer id, got {value!r}")
    return int(text)


def _status(value: Any, where: str) -> str:
    if value not in MONITOR_STATES:
        raise StubSpecError(f"{where}: expected one of {sorted(MONITOR_STATES)}, got {value!r}")
    return str(value)


def _group_state(name: str, spec: Any, now_s: int) -> dict[str, Any]:
    """A `MonitorStateGroup` from `"Alert"` or `{"status": "Alert", "last_triggered_ts": ...}`."""
    fields = {"status": spec} if isinstance(spec, str) else dict(spec)
    status = _status(fields.get("status"), f"group {name!r} status")
    triggered = now_s if status in ("Alert", "Warn") else 0
    return {
        "last_nodata_ts": int(fields.get("last_nodata_ts", now_s if status == "No Data" else 0)),
        "last_notified_ts": int(fields.get("last_notified_ts", triggered)),
        "last_resolved_ts": int(fields.get("last_resolved_ts", now_s if status == "OK" else 0)),
        "last_triggered_ts": int(fields.get("last_triggered_ts", triggered)),
        "name": name,
        "status": status,
    }


def _groups_from_spec(spec: Any, now_s: int) -> dict[str, dict[str, Any]]:
    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        return {str(name): _group_state(str(name), value, now_s) for name, value in spec.items()}
    if isinstance(spec, Sequence) and not isinstance(spec, str):
        groups = {}
        for item in spec:
            if not isinstance(item, Mapping) or "name" not in item:
                raise StubSpecError(f"groups: each item needs a name and a status, got {item!r}")
            groups[str(item["name"])] = _group_state(str(item["name"]), item, now_s)
        return groups
    raise StubSpecError(f"groups: expected a mapping of group name to status, got {spec!r}")


def _overall_state(groups: Mapping[str, Mapping[str, Any]]) -> str:
    present = {group["status"] for group in groups.values()}
    return next((state for state in _SEVERITY if state in present), "OK")


class StubState:
    """Monitors, events, faults, keys, rate limits and call counts of one stub server."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget everything defined and counted; keep only the recorded monitor and event."""
        recorded_monitor = load_fixture("v1_monitor_get_with_downtimes_200.json")
        # Recorded with `with_downtimes=true`; added back when a request asks for it.
        recorded_monitor.pop("matching_downtimes", None)
        recorded_event = load_fixture("v1_event_get_200.json")["event"]
        with self._lock:
            self._monitors: dict[int, _Monitor] = {
                RECORDED_MONITOR_ID: _Monitor(recorded_monitor, {}, recorded=True)
            }
            self._events: dict[int, _Event] = {RECORDED_EVENT_ID: _Event(recorded_event)}
            self._faults: list[Fault] = []
            self._api_keys: frozenset[str] | None = None
            self._app_keys: frozenset[str] | None = None
            self._invalid_key_status = 403
            self._limits = dict(DEFAULT_RATE_LIMITS)
            self._windows: dict[str, _Window] = {}
            self._calls: Counter[str] = Counter()
            self._calls_by_limit: Counter[str] = Counter()

    # ---- control -------------------------------------------------------------------------

    def define_monitor(self, spec: Mapping[str, Any]) -> int:
        """Create or replace a monitor: id, name, tags, groups {name: status}, and more."""
        monitor_id = _as_id(spec.get("id"), "monitor id")
        now_s = int(time.time())
        groups = _groups_from_spec(spec.get("groups"), now_s)
        body = load_fixture("v1_monitor_get_with_downtimes_200.json")
        body.pop("matching_downtimes", None)
        body.update(
            id=monitor_id,
            name=str(spec.get("name") or f"Stub monitor {monitor_id}"),
            type=str(spec.get("type") or "query alert"),
            query=str(spec.get("query") or _DEFAULT_QUERY),
            message=str(spec.get("message") or ""),
            tags=[str(tag) for tag in spec.get("tags") or ()],
            multi=bool(groups),
            priority=spec.get("priority"),
            overall_state=_status(
                spec.get("overall_state") or _overall_state(groups), "overall_state"
            ),
        )
        with self._lock:
            self._monitors[monitor_id] = _Monitor(body, groups)
        return monitor_id

    def update_groups(self, monitor_id: Any, groups: Mapping[str, Any]) -> None:
        """Change (or add) some groups' statuses; the overall state follows."""
        key = _as_id(monitor_id, "monitor id")
        changed = _groups_from_spec(groups, int(time.time()))
        with self._lock:
            monitor = self._monitors.get(key)
            if monitor is None:
                raise StubSpecError(f"monitor {key} is not defined")
            monitor.groups.update(changed)
            monitor.body["overall_state"] = _overall_state(monitor.groups)

    def define_event(self, spec: Mapping[str, Any]) -> int:
        """Create or replace an event; `not_found_calls`/`readable_after_s` delay its indexing."""
        event_id = _as_id(spec.get("id"), "event id")
        body = load_fixture("v1_event_get_200.json")["event"]
        body.update(
            id=event_id,
            resource=f"/api/v1/events/{event_id}",
            url=f"/event/event?id={event_id}",
            title=str(spec.get("title") or body["title"]),
            text=str(spec.get("text") or body["text"]),
            tags=[str(tag) for tag in spec.get("tags") or ()],
            alert_type=str(spec.get("alert_type") or "error"),
            date_happened=int(spec.get("date_happened") or time.time()),
        )
        # Today's API adds `id_str` (the recorded 2021 body predates it); turn off to mimic that.
        if spec.get("id_str", True):
            body["id_str"] = str(event_id)
        for name in ("monitor_id", "monitor_group_status", "monitor_groups", "payload", "host"):
            if name in spec:
                body[name] = spec[name]
        not_found_calls = int(spec.get("not_found_calls") or 0)
        readable_after_s = float(spec.get("readable_after_s") or 0.0)
        with self._lock:
            self._events[event_id] = _Event(body, not_found_calls, self._clock() + readable_after_s)
        return event_id

    def add_fault(self, spec: Mapping[str, Any]) -> None:
        path = str(spec.get("path") or "")
        if not path.startswith("/api/"):
            raise StubSpecError(
                f"fault path: expected a prefix such as /api/v1/monitor/, got {path!r}"
            )
        status = spec.get("status")
        if status is not None and not (isinstance(status, int) and 400 <= status <= 599):
            raise StubSpecError(f"fault status: expected an HTTP error status, got {status!r}")
        times = spec.get("times", 1)
        if times is not None and (not isinstance(times, int) or times < 1):
            raise StubSpecError(f"fault times: expected a positive count or null, got {times!r}")
        fault = Fault(
            path=path,
            status=status,
            reset_s=None if spec.get("reset_s") is None else int(spec["reset_s"]),
            sleep_s=float(spec.get("sleep_s") or 0.0),
            times=times,
            body=spec.get("body"),
        )
        with self._lock:
            self._faults.append(fault)

    def set_keys(
        self, api_keys: Sequence[str] | None, app_keys: Sequence[str] | None, status: int = 403
    ) -> None:
        """Accept only these keys (None: any non-empty key); others get `status` (401 or 403)."""
        if status not in (401, 403):
            raise StubSpecError(f"invalid key status: expected 401 or 403, got {status!r}")
        with self._lock:
            self._api_keys = None if api_keys is None else frozenset(api_keys)
            self._app_keys = None if app_keys is None else frozenset(app_keys)
            self._invalid_key_status = status

    def set_rate_limit(self, name: str, limit: int, period_s: int) -> None:
        if name not in DEFAULT_RATE_LIMITS or limit < 1 or period_s < 1:
            raise StubSpecError(
                f"rate limit: expected a name in {sorted(DEFAULT_RATE_LIMITS)} with a positive "
                f"limit and period, got {name!r} {limit!r}/{period_s!r}s"
            )
        with self._lock:
            self._limits[name] = RateLimit(name, limit, period_s)
            self._windows.pop(name, None)

    def calls(self) -> dict[str, Any]:
        """API requests received (whatever their answer), per path and per rate-limit name."""
        with self._lock:
            return {
                "total": sum(self._calls.values()),
                "paths": dict(self._calls),
                "limits": dict(self._calls_by_limit),
            }

    # ---- the API -------------------------------------------------------------------------

    def handle(self, path: str, args: Mapping[str, str], headers: Mapping[str, str]) -> Answer:
        """Answer one GET request to the Datadog API (`path` without the query string)."""
        lowered = {key.lower(): value for key, value in headers.items()}
        limit_name = _limit_name(path)
        with self._lock:
            now = self._clock()
            self._calls[path] += 1
            if limit_name:
                self._calls_by_limit[limit_name] += 1
            rate_headers, exceeded = self._count(limit_name, now)
            fault = self._take_fault(path)
            delay = fault.sleep_s if fault else 0.0
            if fault is not None and fault.status is not None:
                return self._fault_answer(fault, rate_headers, limit_name)
            denied = self._check_keys(lowered)
            if denied is not None:
                return Answer(denied[0], denied[1], rate_headers, delay)
            if exceeded:
                return Answer(429, _TOO_MANY, rate_headers, delay)
            status, body = self._route(path, args, now)
            return Answer(status, body, rate_headers, delay)

    def _count(self, limit_name: str | None, now: float) -> tuple[dict[str, str], bool]:
        if limit_name is None:
            return {}, False
        limit = self._limits[limit_name]
        window = self._windows.get(limit_name)
        if window is None or now - window.started >= limit.period_s:
            window = self._windows[limit_name] = _Window(now)
        window.used += 1
        # Datadog reports whole seconds until the window resets.
        reset_s = max(1, math.ceil(window.started + limit.period_s - now))
        return (
            {
                "X-Ratelimit-Limit": str(limit.limit),
                "X-Ratelimit-Period": str(limit.period_s),
                "X-Ratelimit-Remaining": str(max(0, limit.limit - window.used)),
                "X-Ratelimit-Reset": str(reset_s),
                "X-Ratelimit-Name": limit.name,
            },
            window.used > limit.limit,
        )

    def _take_fault(self, path: str) -> Fault | None:
        for fault in self._faults:
            if path.startswith(fault.path):
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                return fault
        return None

    def _fault_answer(
        self, fault: Fault, rate_headers: dict[str, str], limit_name: str | None
    ) -> Answer:
        status = fault.status or 500
        headers = dict(rate_headers)
        if status == 429:
            limit = self._limits[limit_name] if limit_name else RateLimit("stub", 1, 10)
            headers.update(
                {
                    "X-Ratelimit-Limit": str(limit.limit),
                    "X-Ratelimit-Period": str(limit.period_s),
                    "X-Ratelimit-Remaining": "0",
                    "X-Ratelimit-Reset": str(fault.reset_s if fault.reset_s is not None else 1),
                    "X-Ratelimit-Name": limit.name,
                }
            )
        if fault.body is not None:
            body = fault.body
        elif status == 404:
            body = load_fixture(
                "v1_event_get_404_not_yet_indexed.json"
                if "/events/" in fault.path
                else "v1_monitor_get_404.json"
            )
        else:
            body = {401: _UNAUTHORIZED, 403: _FORBIDDEN, 429: _TOO_MANY}.get(status, _SERVER_ERROR)
        return Answer(status, body, headers, fault.sleep_s)

    def _check_keys(self, headers: Mapping[str, str]) -> tuple[int, Any] | None:
        api_key = headers.get("dd-api-key", "")
        app_key = headers.get("dd-application-key", "")
        if not api_key or not app_key:
            return 403, _FORBIDDEN
        invalid = (self._api_keys is not None and api_key not in self._api_keys) or (
            self._app_keys is not None and app_key not in self._app_keys
        )
        if invalid:
            body = _UNAUTHORIZED if self._invalid_key_status == 401 else _FORBIDDEN
            return self._invalid_key_status, body
        return None

    def _route(self, path: str, args: Mapping[str, str], now: float) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        if parts[:5] == ["api", "v1", "monitor", "groups", "search"] and len(parts) == 5:
            return self._groups_search(args)
        if parts[:3] == ["api", "v1", "monitor"] and len(parts) == 4:
            return self._monitor(parts[3], args)
        if parts[:3] == ["api", "v1", "events"] and len(parts) == 4:
            return self._event(parts[3], now)
        return 404, _UNKNOWN_PATH

    def _monitor(self, raw_id: str, args: Mapping[str, str]) -> tuple[int, Any]:
        monitor = self._monitors.get(int(raw_id)) if raw_id.isdigit() else None
        if monitor is None:
            return 404, load_fixture("v1_monitor_get_404.json")
        group_states = args.get("group_states")
        wanted: set[str | None] = set()
        if group_states is not None:
            filters = [part.strip().lower() for part in group_states.split(",")]
            if not filters or any(part not in GROUP_STATE_FILTERS for part in filters):
                return 400, load_fixture("v1_monitor_get_400_invalid_group_states.json")
            wanted = {GROUP_STATE_FILTERS[part] for part in filters}
        body = copy.deepcopy(monitor.body)
        if args.get("with_downtimes", "").lower() == "true":
            body["matching_downtimes"] = []
        if group_states is not None:
            body["state"] = {
                "groups": {
                    name: dict(group)
                    for name, group in sorted(monitor.groups.items())
                    if None in wanted or group["status"] in wanted
                }
            }
        return 200, body

    def _event(self, raw_id: str, now: float) -> tuple[int, Any]:
        event = self._events.get(int(raw_id)) if raw_id.isdigit() else None
        if event is not None and event.not_found_calls > 0:
            event.not_found_calls -= 1
            event = None
        if event is None or now < event.readable_at:
            return 404, load_fixture("v1_event_get_404_not_yet_indexed.json")
        return 200, {"event": copy.deepcopy(event.body)}

    def _groups_search(self, args: Mapping[str, str]) -> tuple[int, Any]:
        defined = [m for m in self._monitors.values() if not m.recorded]
        if not defined:
            return 200, load_fixture("v1_monitor_groups_search_200.json")
        status_filter, monitor_filter = None, None
        for token in (args.get("query") or "").split():
            key, _, value = token.partition(":")
            if key == "group_status":
                status_filter = {"alert": "Alert", "warn": "Warn", "ok": "OK"}.get(
                    value.lower(), "No Data" if value.lower() in ("no_data", "nodata") else value
                )
            elif key == "monitor_id" and value.isdigit():
                monitor_filter = int(value)
        items = []
        for monitor in defined:
            body = monitor.body
            if monitor_filter is not None and body["id"] != monitor_filter:
                continue
            for name, group in sorted(monitor.groups.items()):
                if status_filter is not None and group["status"] != status_filter:
                    continue
                items.append(_search_item(body, name, group))
        page = int(args.get("page") or 0)
        per_page = max(1, int(args.get("per_page") or 30))
        statuses = Counter(item["status"] for item in items)
        return 200, {
            "counts": {
                "status": [{"count": n, "name": s} for s, n in statuses.most_common()],
                "muted": [{"count": len(items), "name": False}],
                "tag": [],
                "type": [],
            },
            "groups": items[page * per_page : (page + 1) * per_page],
            "metadata": {
                "total_count": len(items),
                "page_count": math.ceil(len(items) / per_page),
                "page": page,
                "per_page": per_page,
            },
        }


def _search_item(monitor: Mapping[str, Any], name: str, group: Mapping[str, Any]) -> dict[str, Any]:
    """One `groups[]` item of SearchMonitorGroups, shaped like the recorded fixture."""
    tags = [tag for tag in name.split(",") if tag and tag != "*"]
    return {
        "status": group["status"],
        "last_nodata_ts": group["last_nodata_ts"],
        "env_tags": [tag.partition(":")[2] for tag in monitor["tags"] if tag.startswith("env:")],
        "muted_remaining": None,
        "muted_until_ts": None,
        "all_tags": list(monitor["tags"]),
        "monitor_name": monitor["name"],
        "team_tags": [],
        "last_triggered_ts": group["last_triggered_ts"],
        "group": name,
        "downtimes": [],
        "monitor_id": monitor["id"],
        "priority": monitor.get("priority"),
        "muted": False,
        "group_tags": tags,
    }


def _limit_name(path: str) -> str | None:
    if path.startswith("/api/v1/monitor/groups/search"):
        return "monitor_groups_search"
    if path.startswith("/api/v1/monitor/"):
        return "get_monitors"
    if path.startswith("/api/v1/events/"):
        return "get_event"
    return None
