"""`router breakers …`: see the breakers services use, override them by hand, shadow them."""

from __future__ import annotations

import getpass
import os
import time

import click
from breaker_client import Breakers, BreakerState
from breaker_client.writes import check_target

from router.breaker_report import BreakerReport, build_report, span
from router.cli_output import emit_json, when
from router.config import REDIS_URL_EXAMPLE, check_redis_url, parse_duration
from router.errors import ConfigError
from router.keys import DEFAULT_BREAKER_PREFIX


def _open_breakers(redis_url: str | None, prefix: str) -> Breakers:
    if not redis_url:
        raise ConfigError(
            "REDIS_URL is not set: point it (or --redis-url) at the Redis your services' "
            f"breakers live in, e.g. {REDIS_URL_EXAMPLE}"
        )
    check_redis_url(redis_url)
    # No background sync: a command reads and writes Redis directly, then exits.
    return Breakers.from_url(redis_url, prefix=prefix, sync=False)


def _describe(state: BreakerState) -> str:
    detail = state.state.replace("_", " ")
    if state.state == "recovering" and state.ramp_share is not None:
        detail += f" ({state.ramp_share:.0%} through, until {when(state.ramp_ends_at_ms)})"
    if state.forced:
        until = f" until {when(state.expires_at_ms)}" if state.expires_at_ms else ""
        detail += f" by {state.forced_by}{until}; monitor says {state.monitor_state}"
    return detail


redis_option = click.option(
    "--redis-url",
    envvar="REDIS_URL",
    help="The Redis the services' breakers live in (REDIS_URL).",
)
prefix_option = click.option(
    "--prefix",
    envvar="BREAKERS_PREFIX",
    default=DEFAULT_BREAKER_PREFIX,
    show_default=True,
    help="Key prefix the services' Breakers use (BREAKERS_PREFIX).",
)


def _operator() -> str:
    return os.environ.get("ROUTER_OPERATOR") or getpass.getuser()


def _shadowed(state: BreakerState, names_shadowed: set[str]) -> bool:
    """In shadow mode itself, or through its name's keyless breaker."""
    return state.shadow or state.name in names_shadowed


def _shadow_column(in_shadow: bool, refusals: int) -> str:
    if in_shadow:
        return f"shadow mode: {refusals:,} calls let through it would have refused"
    if refusals:
        return f"was in shadow mode: {refusals:,} calls let through it would have refused"
    return ""


@click.group()
def breakers() -> None:
    """List breakers, see their history, open or close them by hand, or shadow them."""


@breakers.command("list")
@redis_option
@prefix_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_breakers(redis_url: str | None, prefix: str, as_json: bool) -> None:
    """Every breaker with its state, reason and source, and what shadow mode let through."""
    client = _open_breakers(redis_url, prefix)
    states = client.list()
    counts = client.shadow_counts((s.name, s.key) for s in states)
    names_shadowed = {s.name for s in states if s.key is None and s.shadow}
    if as_json:
        emit_json(
            [
                {
                    **s.to_dict(),
                    "in_shadow": _shadowed(s, names_shadowed),
                    "shadow_refusals": counts.get((s.name, s.key), 0),
                }
                for s in states
            ]
        )
        return
    if not states:
        click.echo("No breakers yet: none has been written.")
        return
    for state in states:
        target = state.name if state.key is None else f"{state.name} {state.key}"
        click.echo(f"{target:<28} {_describe(state)}")
        click.echo(f"{'':<28} since {when(state.since_ms)}: {state.reason} [{state.source}]")
        shadow = _shadow_column(
            _shadowed(state, names_shadowed), counts.get((state.name, state.key), 0)
        )
        if shadow:
            click.echo(f"{'':<28} {shadow}")


@breakers.command()
@click.argument("name")
@click.argument("key", required=False)
@redis_option
@prefix_option
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def history(
    name: str, key: str | None, redis_url: str | None, prefix: str, limit: int, as_json: bool
) -> None:
    """The changes of one breaker, newest first."""
    entries = _open_breakers(redis_url, prefix).history(name, key, limit=limit)
    if as_json:
        emit_json([vars(e) for e in entries])
        return
    if not entries:
        click.echo("No history for that breaker.")
    for entry in entries:
        who = entry.by or entry.source or "-"
        if entry.stale:
            click.echo(
                f"{when(entry.time_ms)}  {entry.old_state:>13}    (unchanged)   "
                f"{entry.action:<15} {who}: {entry.reason}"
            )
            click.echo(
                f"{'':<21}ignored: this event (at {when(entry.version)}) is older than the "
                f"one the breaker holds (at {when(entry.newer_version)}, "
                f"{entry.newer_source or 'unknown source'})"
            )
            continue
        click.echo(
            f"{when(entry.time_ms)}  {entry.old_state:>13} -> {entry.new_state:<13} "
            f"{entry.action:<15} {who}: {entry.reason}"
        )


def _refuse_unknown(client: Breakers, name: str, key: str | None, action: str) -> None:
    """Refuse a breaker name no service has written while others exist: most likely a typo.

    A new key of a known name, or any breaker while none exists yet (a fresh system, where
    there is nothing to misspell), goes ahead with a warning that names what exists; clearing
    a breaker that does not exist is refused (there is nothing to clear).
    """
    known = client.list()
    if any(s.name == name and s.key == key for s in known):
        return
    target = name if key is None else f"{name} {key}"
    same_name = sorted(s.key or "(no key)" for s in known if s.name == name)
    names = sorted({s.name for s in known})
    if same_name:
        seen = f"{name} has keys {', '.join(same_name[:10])}{' …' if len(same_name) > 10 else ''}"
    elif known:
        seen = f"known breakers: {', '.join(names[:10])}{' …' if len(names) > 10 else ''}"
    else:
        seen = "no breaker has been written yet (check --prefix / BREAKERS_PREFIX)"
    if action == "clear":
        raise click.UsageError(f"no breaker {target} ({seen}); nothing to clear")
    if known and not same_name:
        raise click.UsageError(
            f"no breaker {target} ({seen}); check the spelling, or pass --create to create it"
        )
    click.echo(f"warning: {target} is a new breaker ({seen}); pass --create to say so", err=True)


def _override(
    action: str,
    name: str,
    key: str | None,
    reason: str,
    duration: str | None,
    redis_url: str | None,
    prefix: str,
    create: bool = False,
) -> None:
    try:
        expires_in = parse_duration(duration, name="--for") if duration else None
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    by = _operator()
    client = _open_breakers(redis_url, prefix)
    try:
        check_target(name, key)
        if not create:
            _refuse_unknown(client, name, key, action)
        if action == "open":
            result = client.force_open(name, key, reason=reason, by=by, expires_in=expires_in)
        elif action == "close":
            result = client.force_close(name, key, reason=reason, by=by, expires_in=expires_in)
        else:
            result = client.clear_override(name, key, reason=reason, by=by)
    except ValueError as exc:  # a malformed name or key
        raise click.UsageError(str(exc)) from exc
    target = name if key is None else f"{name} {key}"
    until = f" for {duration}" if duration else " until `router breakers clear`"
    if action == "clear":
        until = ""
    click.echo(f"{target}: {result.old_state} -> {result.new_state}{until}")


def _override_command(action: str, summary: str) -> click.Command:
    @click.argument("name")
    @click.argument("key", required=False)
    @click.option("--reason", required=True, help="Why; shown in listings and history.")
    @click.option("--for", "duration", help="Expire the override after e.g. 30m or 2h.")
    @click.option(
        "--create", is_flag=True, help="Create the breaker if no service has written it yet."
    )
    @redis_option
    @prefix_option
    def command(
        name: str,
        key: str | None,
        reason: str,
        duration: str | None,
        create: bool,
        redis_url: str | None,
        prefix: str,
    ) -> None:
        _override(action, name, key, reason, duration, redis_url, prefix, create)

    command.__doc__ = summary
    return breakers.command(action)(command)


_override_command("open", "Force a breaker open; monitor events do not undo it until it ends.")
_override_command("close", "Force a breaker closed; monitor events do not undo it until it ends.")


@breakers.command("clear")
@click.argument("name")
@click.argument("key", required=False)
@click.option("--reason", default="override cleared", show_default=True)
@redis_option
@prefix_option
def clear_breaker(
    name: str, key: str | None, reason: str, redis_url: str | None, prefix: str
) -> None:
    """End a manual override: the breaker follows its monitor again."""
    _override("clear", name, key, reason, None, redis_url, prefix)


@breakers.command("shadow")
@click.argument("name")
@click.argument("key", required=False)
@click.option("--on/--off", "on", default=None, help="Put in shadow mode, or take out of it.")
@click.option("--reason", default="", help="Why; shown in the history.")
@redis_option
@prefix_option
def shadow_breaker(
    name: str, key: str | None, on: bool | None, reason: str, redis_url: str | None, prefix: str
) -> None:
    """Shadow mode: the breaker follows its monitor, but services' `is_open` answers False and
    counts each call it would have refused. Without KEY: every key of NAME too."""
    if on is None:
        raise click.UsageError("say --on (shadow mode) or --off (refuse calls again)")
    client = _open_breakers(redis_url, prefix)
    try:
        client.set_shadow(name, key, on=on, by=_operator(), reason=reason)
    except ValueError as exc:  # a malformed name or key
        raise click.UsageError(str(exc)) from exc
    target = name if key is None else f"{name} {key}"
    scope = f" and every key of {name}" if key is None else ""
    if on:
        click.echo(
            f"{target}{scope}: shadow mode on; is_open answers False and counts what it would "
            f"refuse (`router breakers report {target}`)"
        )
    else:
        click.echo(f"{target}{scope}: shadow mode off; it refuses calls while open")


@breakers.command("report")
@click.argument("name")
@click.argument("key", required=False)
@click.option("--since", "since", default="7d", show_default=True, help="How far back: 7d, 12h.")
@redis_option
@prefix_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def report(
    name: str, key: str | None, since: str, redis_url: str | None, prefix: str, as_json: bool
) -> None:
    """When NAME (every key of it, or KEY alone) would have been open since --since, for how
    long, and how many calls it would have refused, by period."""
    try:
        window_s = parse_duration(since, name="--since")
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    client = _open_breakers(redis_url, prefix)
    now_ms = int(time.time() * 1000)
    since_ms = now_ms - int(window_s * 1000)
    of_name = [s for s in client.list() if s.name == name]
    names_shadowed = {s.name for s in of_name if s.key is None and s.shadow}
    states = [s for s in of_name if key is None or s.key == key]
    reports = [
        build_report(
            s.name,
            s.key,
            client.history(s.name, s.key, limit=HISTORY_READ),
            client.shadow_timeline(s.name, s.key),
            since_ms=since_ms,
            now_ms=now_ms,
            shadow=_shadowed(s, names_shadowed),
        )
        for s in states
    ]
    if as_json:
        emit_json([r.to_dict() for r in reports])
        return
    target = name if key is None else f"{name} {key}"
    if not reports:
        click.echo(f"No breaker {target}: none has been written (or it was pruned).")
        return
    click.echo(f"{target} since {when(since_ms)} ({since}):")
    for one in reports:
        _print_report(one)


# Every change a breaker keeps (`history_max`, 1000 by default, is far below it).
HISTORY_READ = 100_000


def _print_report(one: BreakerReport) -> None:
    target = one.name if one.key is None else f"{one.name} {one.key}"
    mode = "shadow mode" if one.shadow else "enforcing"
    click.echo(
        f"{target:<28} {mode}; {len(one.periods)} period(s) open, "
        f"would have refused {one.refusals:,} calls"
    )
    for period in one.periods:
        start = "before " + when(period.start_ms) if period.open_before else when(period.start_ms)
        end = when(period.end_ms) if period.end_ms is not None else "ongoing"
        click.echo(
            f"{'':<4}{start} -> {end:<20} {span(period.duration_ms(one.now_ms)):>8}   "
            f"{period.refusals:>9,} calls"
        )
    if one.outside_periods:
        click.echo(f"{'':<4}{one.outside_periods:,} calls in no period (an earlier one's tail)")
