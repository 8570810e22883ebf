"""`router breakers …`: see the breakers services use, and override them by hand."""

from __future__ import annotations

import getpass
import os

import click
from breaker_client import Breakers, BreakerState

from router.cli_output import emit_json, when
from router.config import parse_duration
from router.errors import ConfigError
from router.keys import DEFAULT_BREAKER_PREFIX


def _open_breakers(redis_url: str | None, prefix: str) -> Breakers:
    if not redis_url:
        raise ConfigError(
            "REDIS_URL is not set: point it (or --redis-url) at the Redis your services' "
            "breakers live in"
        )
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


@click.group()
def breakers() -> None:
    """List breakers, see their history, and open or close them by hand."""


@breakers.command("list")
@redis_option
@prefix_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_breakers(redis_url: str | None, prefix: str, as_json: bool) -> None:
    """Every breaker with its state, reason and source."""
    states = _open_breakers(redis_url, prefix).list()
    if as_json:
        emit_json([s.to_dict() for s in states])
        return
    if not states:
        click.echo("No breakers yet: none has been written.")
        return
    for state in states:
        target = state.name if state.key is None else f"{state.name} {state.key}"
        click.echo(f"{target:<28} {_describe(state)}")
        click.echo(f"{'':<28} since {when(state.since_ms)}: {state.reason} [{state.source}]")


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
        click.echo(
            f"{when(entry.time_ms)}  {entry.old_state:>13} -> {entry.new_state:<13} "
            f"{entry.action:<15} {who}: {entry.reason}"
        )


def _override(
    action: str,
    name: str,
    key: str | None,
    reason: str,
    duration: str | None,
    redis_url: str | None,
    prefix: str,
) -> None:
    try:
        expires_in = parse_duration(duration, name="--for") if duration else None
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    by = os.environ.get("ROUTER_OPERATOR") or getpass.getuser()
    client = _open_breakers(redis_url, prefix)
    try:
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
    @redis_option
    @prefix_option
    def command(
        name: str,
        key: str | None,
        reason: str,
        duration: str | None,
        redis_url: str | None,
        prefix: str,
    ) -> None:
        _override(action, name, key, reason, duration, redis_url, prefix)

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
