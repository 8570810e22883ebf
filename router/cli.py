"""The `router` command: worker, dev, dead letters, breakers, message lint, secrets."""

from __future__ import annotations

import base64
import dataclasses
import os
import secrets
import sys
from typing import TextIO

import click
import redis
from breaker_client import BreakerStoreUnavailable

from router import logs
from router.allowlist import CallbackAllowList
from router.cli_breakers import breakers
from router.cli_output import emit_json, when
from router.cli_reconcile import reconcile
from router.config import (
    DEFAULT_CALLBACK_KEYWORD,
    DEFAULT_RECONCILE_INTERVAL_S,
    REDIS_URL_EXAMPLE,
    Settings,
    format_duration,
    parse_callback_allow,
    parse_duration,
    parse_log_settings,
    settings_for,
)
from router.demo import demo, send_example
from router.errors import ConfigError
from router.keys import RouterKeys
from router.parsing.conditionals import LintReport, lint_message
from router.queue import Delivery, DeliveryQueue
from router.redis_check import warn_if_not_durable
from router.redis_conn import connect


def redis_hint(setting: str = "REDIS_URL") -> str:
    return f"is Redis running there? check {setting}, e.g. {REDIS_URL_EXAMPLE}"


def setup_logging(settings: Settings) -> None:
    """The handler of a long-running command, in ROUTER_LOG_FORMAT (text or json)."""
    logs.setup_logging(settings.log_format, settings.log_level, buffered=True)


def load_settings() -> Settings:
    return settings_for(os.environ, "redis")


def open_queue(settings: Settings) -> DeliveryQueue:
    return DeliveryQueue(
        connect(settings.require_redis()),
        RouterKeys(settings.key_prefix),
        retention_s=settings.delivery_retention_s,
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="breaker-router")
def cli() -> None:
    """breaker-router: Datadog monitor notifications to circuit-breaker callbacks."""


@cli.command()
def worker() -> None:
    """Deliver queued notifications to callbacks (run any number of these)."""
    from router.worker import Worker

    settings = settings_for(os.environ, "worker")
    setup_logging(settings)
    warn_if_not_durable(settings.require_redis())
    runner = Worker(settings)
    runner.install_signal_handlers()
    runner.run()


@cli.command()
@click.option("--port", type=int, help="Port of the router web (default $PORT or 8000).")
@click.option(
    "--redis",
    "redis_kind",
    type=click.Choice(["auto", "redis-server", "fakeredis"]),
    default="auto",
    show_default=True,
    help="Embedded Redis when REDIS_URL is unset: auto prefers redis-server on the PATH.",
)
def dev(port: int | None, redis_kind: str) -> None:
    """Run everything on this machine: Redis, Datadog stub, web, worker, example service."""
    from router.devserver import run_dev

    # Its children (web, worker) inherit ROUTER_LOG_FORMAT and set up their own.
    logs.setup_logging(*parse_log_settings(os.environ))
    run_dev(port, redis_kind)


@cli.command()
def secret() -> None:
    """Print a new ROUTER_SIGNING_SECRET (Standard Webhooks `whsec_` format)."""
    click.echo("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())


@cli.command("lint-message")
@click.argument("source", type=click.File("r", encoding="utf-8"))
@click.option(
    "--keyword",
    envvar="ROUTER_CALLBACK_KEYWORD",
    default=DEFAULT_CALLBACK_KEYWORD,
    show_default=True,
    help="The callback keyword (ROUTER_CALLBACK_KEYWORD).",
)
@click.option(
    "--allow",
    envvar="ROUTER_CALLBACK_ALLOW",
    help="URL prefixes the workers may call (ROUTER_CALLBACK_ALLOW); others get a warning.",
)
@click.option(
    "--reconcile-interval",
    envvar="ROUTER_RECONCILE_INTERVAL",
    default=format_duration(DEFAULT_RECONCILE_INTERVAL_S),
    show_default=True,
    help="How often the workers' reconciler runs (ROUTER_RECONCILE_INTERVAL).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def lint_message_command(
    source: TextIO, keyword: str, allow: str | None, reconcile_interval: str, as_json: bool
) -> None:
    """Show which callback URLs a monitor message (FILE, or - for stdin) yields per transition."""
    try:
        interval_s = parse_duration(reconcile_interval, name="ROUTER_RECONCILE_INTERVAL")
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="'--reconcile-interval'") from exc
    report = check_allowed(
        lint_message(source.read(), keyword, reconcile_interval_s=interval_s), allow
    )
    if as_json:
        emit_json(report.to_dict())
    else:
        width = max(len(t.transition) for t in report.transitions)
        for result in report.transitions:
            urls = ", ".join(result.callback_urls) or "-"
            click.echo(f"{result.transition:<{width}}  {urls}")
        for label, lines in (
            ("problem", report.problems),
            ("warning", report.warnings),
            ("note", report.notes),
        ):
            for line in lines:
                click.echo(f"{label}: {line}", err=label != "note")
    if not report.ok:
        sys.exit(1)


def check_allowed(report: LintReport, allow: str | None) -> LintReport:
    """The report plus a warning per URL the workers would refuse (or a note: not checked)."""
    if allow is None:
        return dataclasses.replace(
            report,
            notes=(
                *report.notes,
                "ROUTER_CALLBACK_ALLOW is not set here, so the URLs were not checked against "
                "it; set it (or pass --allow) to see which ones the workers would refuse",
            ),
        )
    try:
        allow_list = CallbackAllowList(parse_callback_allow(allow))
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="'--allow' / ROUTER_CALLBACK_ALLOW") from exc
    urls = dict.fromkeys(url for result in report.transitions for url in result.callback_urls)
    refused = [
        allow_list.refusal(url).replace("; no request was made", "")
        + ": the workers dead-letter it without calling it"
        for url in urls
        if not allow_list.allows(url)
    ]
    return dataclasses.replace(report, warnings=(*report.warnings, *refused))


# -- dead letters -------------------------------------------------------------------------


@cli.group()
def dlq() -> None:
    """Inspect, replay and purge dead deliveries."""


def _load_dead(queue: DeliveryQueue, delivery_id: str) -> Delivery:
    delivery = queue.load(delivery_id)
    if delivery is None:
        raise click.UsageError(
            f"no delivery {delivery_id}; list dead deliveries with `router dlq list`"
        )
    return delivery


@dlq.command("list")
@click.option(
    "--limit",
    default=50,
    show_default=True,
    type=click.IntRange(min=1),
    help="How many, newest first.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def dlq_list(limit: int, as_json: bool) -> None:
    """List dead deliveries, newest first."""
    queue = open_queue(load_settings())
    letters = queue.dead_letters(limit=limit)
    rows = []
    for letter in letters:
        delivery = queue.load(letter.delivery_id)
        rows.append(
            {
                "id": letter.delivery_id,
                "dead_at": when(letter.dead_at_ms),
                "url": letter.url,
                "attempts": len(delivery.attempts) if delivery else 0,
                "monitor_id": delivery.notification.monitor_id if delivery else None,
                "transition": delivery.notification.transition if delivery else None,
                "reason": letter.reason,
            }
        )
    if as_json:
        emit_json({"total": queue.dead_count(), "dead_letters": rows})
        return
    if not rows:
        click.echo("No dead deliveries.")
        return
    for row in rows:
        click.echo(
            f"{row['id']}  {row['dead_at']}  {row['transition'] or '-':<9} "
            f"monitor {row['monitor_id'] or '-'}  attempts {row['attempts']}  {row['url']}"
        )
        click.echo(f"    {row['reason']}")
    total = queue.dead_count()
    if total > len(rows):
        click.echo(f"({total - len(rows)} more; use --limit)")


@dlq.command("show")
@click.argument("delivery_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def dlq_show(delivery_id: str, as_json: bool) -> None:
    """Show one delivery: its URL, notification, every attempt and why it died."""
    delivery = _load_dead(open_queue(load_settings()), delivery_id)
    if as_json:
        emit_json(delivery.to_dict())
        return
    note = delivery.notification
    click.echo(f"delivery   {delivery.id}  ({delivery.status})")
    click.echo(f"url        {delivery.url}")
    if delivery.reason:
        click.echo(f"reason     {delivery.reason}")
    click.echo(f"created    {when(delivery.created_ms)}   replays {delivery.replays}")
    click.echo(f"transition {note.transition} ({note.datadog_transition})")
    click.echo(f"monitor    {note.monitor_id or '-'}   event {note.event_id or '-'}")
    click.echo(f"title      {note.title}")
    click.echo(f"scope      {note.scope or '-'}")
    click.echo(f"attempts   {len(delivery.attempts)}")
    for attempt in delivery.attempts:
        outcome = attempt.get("status") or attempt.get("error")
        click.echo(
            f"  #{attempt['n']:<3} {when(attempt['at_ms'])}  {attempt['trigger']:<6} "
            f"{attempt['outcome']:<9} {outcome}  ({attempt['duration_ms']} ms)"
        )
        if attempt.get("error") and attempt.get("status"):
            click.echo(f"       {attempt['error']}")


def _selected_ids(queue: DeliveryQueue, ids: tuple[str, ...], select_all: bool) -> list[str]:
    if select_all and ids:
        raise click.UsageError("give delivery ids or --all, not both")
    if select_all:
        return [letter.delivery_id for letter in queue.dead_letters(limit=1_000_000)]
    if not ids:
        raise click.UsageError("give one or more delivery ids, or --all")
    return list(ids)


@dlq.command("replay")
@click.argument("delivery_ids", nargs=-1)
@click.option("--all", "select_all", is_flag=True, help="Replay every dead delivery.")
def dlq_replay(delivery_ids: tuple[str, ...], select_all: bool) -> None:
    """Queue dead deliveries again, under their own ids (receivers can drop repeats)."""
    queue = open_queue(load_settings())
    ids = _selected_ids(queue, delivery_ids, select_all)
    failed = False
    for delivery_id in ids:
        if queue.replay(delivery_id):
            click.echo(f"replayed {delivery_id}")
            continue
        delivery = queue.load(delivery_id)
        state = "unknown" if delivery is None else delivery.status
        click.echo(f"not replayed {delivery_id}: it is {state}, not dead", err=True)
        failed = True
    if failed:
        sys.exit(1)


@dlq.command("purge")
@click.argument("delivery_ids", nargs=-1)
@click.option("--all", "select_all", is_flag=True, help="Purge every dead delivery.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation with --all.")
def dlq_purge(delivery_ids: tuple[str, ...], select_all: bool, yes: bool) -> None:
    """Delete dead deliveries for good."""
    queue = open_queue(load_settings())
    ids = _selected_ids(queue, delivery_ids, select_all)
    if select_all and not yes:
        click.confirm(f"Delete {len(ids)} dead deliveries for good?", abort=True)
    removed = queue.purge(ids)
    click.echo(f"purged {removed} of {len(ids)}")
    if removed < len(ids):
        sys.exit(1)


cli.add_command(breakers)
cli.add_command(demo)
cli.add_command(send_example)
cli.add_command(reconcile)


def main() -> None:
    """Entry point: configuration and Redis problems are one clear line each, not a traceback."""
    try:
        cli(standalone_mode=True)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"router: configuration error: {problem}", err=True)
        sys.exit(2)
    except redis.RedisError as exc:
        url = mask_url(os.environ.get("REDIS_URL") or "(REDIS_URL unset)")
        click.echo(f"router: cannot reach Redis at {url}: {exc} ({redis_hint()})", err=True)
        sys.exit(1)
    except BreakerStoreUnavailable as exc:
        # The breakers' Redis may come from --redis-url; the message names its address.
        click.echo(f"router: {exc} ({redis_hint('REDIS_URL or --redis-url')})", err=True)
        sys.exit(1)


def mask_url(url: str) -> str:
    """A URL fit to print: any password in it masked."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, hosts = rest.rpartition("@")
    return f"{scheme}{sep}***@{hosts}" if at and userinfo else url
