"""A service's callback endpoint without a web framework: verify, parse, dedupe, handle, answer.

`process_callback` maps every outcome to the status the router expects: 401 for a bad
signature, 422 for a body that can never be parsed (the router dead-letters it), 503 when
Redis is down (the router retries, so nothing is lost), 204/200 when handled. A handler's
other exceptions propagate: the framework answers 500 and the router retries.
`apply_callback` is the usual handler: monitor groups tagged `<tag>:<value>` drive the keys
of one breaker name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from breaker_client.breakers import Breakers
from breaker_client.callback import CallbackEvent, Group, parse_callback_body
from breaker_client.errors import BreakerStoreUnavailable, InvalidCallbackBody, InvalidSignature
from breaker_client.model import STATUS_AFTER, WriteResult
from breaker_client.signature import SignatureVerifier
from breaker_client.writes import DEFAULT_OPEN_STATUSES, GroupStatus

log = logging.getLogger(__name__)

# Longer than the router's whole retry schedule (hours by default), so a late retry of a
# handled delivery is still recognised; versioned writes make a missed one harmless anyway.
DEFAULT_DEDUPE_TTL_S = 3 * 24 * 3600.0

HandlerResult = Mapping[str, Any] | Sequence[WriteResult] | None
Handler = Callable[[CallbackEvent], HandlerResult]


@dataclass(frozen=True)
class CallbackResponse:
    """What to answer the router: a status and a JSON body (None for 204)."""

    status: int
    body: dict[str, Any] | None


def process_callback(
    body: bytes,
    headers: Mapping[str, str],
    verifier: SignatureVerifier,
    handler: Handler,
    *,
    breakers: Breakers | None = None,
    dedupe_ttl_s: float | None = DEFAULT_DEDUPE_TTL_S,
) -> CallbackResponse:
    """Handle one callback request. With `breakers`, a delivery already handled is skipped."""
    try:
        webhook_id = verifier.verify(body, headers)
    except InvalidSignature as exc:
        log.warning("breaker callback refused: %s", exc)
        return CallbackResponse(401, {"error": str(exc)})
    try:
        event = parse_callback_body(body, webhook_id=webhook_id)
    except InvalidCallbackBody as exc:
        log.warning("breaker callback %s has a body we cannot read: %s", webhook_id, exc)
        return CallbackResponse(422, {"error": str(exc)})
    ids = f"delivery={event.delivery_id} monitor={event.monitor.id} event={event.event.id}"
    dedupe = breakers if dedupe_ttl_s else None
    try:
        if dedupe is not None and dedupe.delivery_seen(webhook_id):
            log.info("breaker callback %s already handled (%s)", webhook_id, ids)
            return CallbackResponse(200, {"duplicate": True, "webhook_id": webhook_id})
        result = handler(event)
    except BreakerStoreUnavailable as exc:
        log.warning(
            "breaker callback %s not applied, router will retry (%s): %s", webhook_id, ids, exc
        )
        return CallbackResponse(503, {"error": str(exc), "retry": True})
    if dedupe is not None and dedupe_ttl_s:
        try:
            dedupe.mark_delivery_seen(webhook_id, dedupe_ttl_s)
        except BreakerStoreUnavailable as exc:
            # The writes are done; a retry would only repeat versioned, idempotent writes.
            log.warning("breaker callback %s handled but not marked seen: %s", webhook_id, exc)
    if result is None:
        return CallbackResponse(204, None)
    if isinstance(result, Mapping):
        return CallbackResponse(200, dict(result))
    return CallbackResponse(200, {"results": [r.to_dict() for r in result]})


def _reason(event: CallbackEvent) -> str:
    what = event.event.title or event.monitor.name or f"monitor {event.monitor.id}"
    return f"{event.transition}: {what}"


def _source(event: CallbackEvent) -> str:
    return f"monitor:{event.monitor.id} event:{event.event.id} delivery:{event.delivery_id}"


def _notified_status(event: CallbackEvent) -> str | None:
    """The status the notification itself reports, when it says one."""
    if event.group is not None and event.group.status != "Unknown":
        return event.group.status
    return STATUS_AFTER.get(event.transition)


def group_identity(group: Group | None) -> str:
    """One spelling of a group, whether a notification's scope or a monitor read names it."""
    if group is None:
        # No scope: a simple monitor, whose one group Datadog calls "*".
        return "*"
    tags = sorted({tag.strip() for tag in group.tags if tag.strip()})
    return ",".join(tags) if tags else (group.name.strip() or "*")


def _groups_as_notified(event: CallbackEvent) -> list[tuple[Group, int, bool]]:
    """The monitor's groups, each with the version its status is known at and whether the
    notification is about it.

    The notification is the authority on its own group at its event time. The read (cached,
    or lagging Datadog's indexing) decides every other group only at that group's own last
    transition time, so a stale read cannot undo a newer alert or recovery; a group with no
    known transition gets version 0, which only a breaker key never written accepts.
    """
    status = _notified_status(event) or "Unknown"
    known = status != "Unknown"
    notified = group_identity(event.group)
    groups: list[tuple[Group, int, bool]] = []
    for group in event.monitor.groups:
        if known and group_identity(group) == notified:
            groups.append((replace(group, status=status), event.version or 0, True))
        else:
            transition_ms = group.last_triggered_ms if group.status != "OK" else None
            transition_ms = transition_ms or group.last_resolved_ms or group.last_triggered_ms
            groups.append((group, transition_ms or 0, False))
    if known and event.group is not None and not any(is_it for _, _, is_it in groups):
        groups.append((replace(event.group, status=status), event.version or 0, True))
    return groups


def _read_as_of(groups: Sequence[Group]) -> int | None:
    """A time the monitor read provably reflects: the newest transition it shows."""
    times = [t for g in groups for t in (g.last_triggered_ms, g.last_resolved_ms) if t]
    return max(times, default=None)


def _keyless_groups(event: CallbackEvent) -> tuple[list[GroupStatus], int | None]:
    """What this callback tells about each group of the monitor, for the keyless breaker.

    Each group is asserted at the time it was observed (the notified group at the event
    time, the others at their own last transition), so no lagging read outranks a newer
    event. Without complete enrichment only the notified group is. With it, the groups are
    complete as of the read's newest transition: a group stored before then and missing
    from the read is gone (its monitor was changed, or Datadog dropped it).
    """
    # Several monitors may feed one breaker: their groups (often all "*") must stay apart.
    owner = f"monitor:{event.monitor.id or ''} "
    if event.enrichment.complete and event.monitor.groups:
        observed = [
            GroupStatus(
                owner + group_identity(group),
                None if group.status == "Unknown" else group.status,
                event.version if notified else version,
                notified,
            )
            for group, version, notified in _groups_as_notified(event)
        ]
        return observed, _read_as_of(event.monitor.groups)
    status, notified = _notified_status(event), True
    if status is None and event.enrichment.complete:
        # A read with no groups at all: its overall state stands for the monitor's one group.
        status, notified = event.monitor.overall_state, False
    if status is None or status == "Unknown":
        return [], None
    identity = owner + group_identity(event.group)
    return [GroupStatus(identity, status, event.version, notified)], None


def _iso(ms: int | None) -> str:
    if ms is None:
        return "an unknown time"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")


def _target(result: WriteResult) -> str:
    return result.name if result.key is None else f"{result.name} {result.key}"


def log_outcomes(
    results: Sequence[WriteResult],
    event: CallbackEvent,
    ids: str,
    *,
    own: Sequence[WriteResult] | None = None,
) -> None:
    """One line per breaker that changed, and one when the event's `own` writes (default:
    all) were refused as older than what the breaker holds, naming the newer event."""
    for result in results:
        if result.changed:
            log.info(
                "breaker %s: %s -> %s (%s; %s)",
                _target(result),
                result.old_state,
                result.new_state,
                event.transition,
                ids,
            )
    for result in results if own is None else own:
        if result.outcome != "stale":
            continue
        target = _target(result)
        log.warning(
            "breaker callback: %s ignored this %s from %s: the breaker already holds a newer "
            "event from %s (%s); `router breakers history %s` shows it (%s)",
            target,
            event.transition,
            _iso(event.version),
            _iso(result.version),
            result.newer_source or "unknown source",
            target,
            ids,
        )


def _nothing_to_apply(event: CallbackEvent, ids: str) -> None:
    log.info(
        "breaker callback: %s tells no group status; nothing to apply (%s)", event.transition, ids
    )


def apply_callback(
    breakers: Breakers,
    event: CallbackEvent,
    name: str,
    *,
    tag: str | None = None,
    open_statuses: frozenset[str] | set[str] = DEFAULT_OPEN_STATUSES,
    ramp: bool = True,
) -> list[WriteResult]:
    """Turn a callback into writes to breaker `name`, versioned by the event time.

    Without `tag` the keyless breaker is open while any group of the monitor(s) feeding it
    alerts, each group ordered by its own event times. With `tag` (e.g. `bank_code`),
    each group tagged `bank_code:XXXX` drives key `XXXX`: when enrichment is complete the
    monitor's groups are applied as one snapshot (listed keys open or closed, unlisted keys
    closed; so feed one breaker name from one monitor), otherwise the notified group alone.
    A status in `open_statuses` (default `Alert`) opens; any other known status closes,
    ramping. Warnings and no-data close unless listed: the service decides what they mean.
    """
    reason, source, version = _reason(event), _source(event), event.version
    ids = f"delivery={event.delivery_id} monitor={event.monitor.id} event={event.event.id}"
    key: str | None = None
    if tag is None:
        # The whole vendor is down while any group is: one group recovering while another
        # still alerts keeps the keyless breaker open.
        observed, as_of = _keyless_groups(event)
        if not any(o.status is not None for o in observed):
            _nothing_to_apply(event, ids)
            return []
        written = breakers.apply_groups(
            name,
            observed,
            reason=reason,
            source=source,
            open_statuses=open_statuses,
            ramp=ramp,
            complete_as_of=as_of,
        )
        log_outcomes([written], event, ids)
        return [written]
    if event.enrichment.complete and event.monitor.groups:
        states: dict[str | None, bool | str] = {}
        versions: dict[str | None, int | None] = {}
        for group, group_version, _notified in _groups_as_notified(event):
            value = group.tag_value(tag)
            if value is None:
                continue
            states[value] = bool(states.get(value)) or group.status in open_statuses
            versions[value] = max(versions.get(value) or 0, group_version)
        if states:
            snapshot = breakers.apply_snapshot(
                name,
                states,
                reason=reason,
                version=version,
                versions=versions,
                source=source,
                ramp=ramp,
                # Keys of this breaker fed by another monitor are not this one's to close.
                owner=f"monitor:{event.monitor.id} " if event.monitor.id else None,
            )
            # Only the notified group's key is this event's to lose; the others are from a read.
            notified_key = event.tag_value(tag)
            own = [r for r in snapshot if r.key == notified_key]
            log_outcomes(snapshot, event, ids, own=own)
            return snapshot
        log.warning("breaker callback: no monitor group is tagged %s: (%s)", tag, ids)
    key = event.tag_value(tag)
    status = _notified_status(event)
    if key is None:
        log.warning("breaker callback: no %s: tag on the notified group (%s)", tag, ids)
        return []
    if status is None or status == "Unknown":
        _nothing_to_apply(event, ids)
        return []
    if status in open_statuses:
        written = breakers.open(name, key, reason=reason, version=version, source=source)
    else:
        written = breakers.close(
            name, key, reason=reason, version=version, source=source, ramp=ramp
        )
    log_outcomes([written], event, ids)
    return [written]
