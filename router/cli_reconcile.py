"""`router reconcile …`: what the reconciler watches, its last cycle, and forgetting a monitor."""

from __future__ import annotations

import os
from typing import Any

import click

from router.cli_output import emit_json, when
from router.config import Settings
from router.keys import RouterKeys
from router.parsing.callbacks import mask_credentials
from router.reconcile import RECONCILE_STATUS_FIELDS, ToldBook, reconciler_health
from router.redis_conn import connect


def _book() -> ToldBook:
    settings = Settings.from_env(os.environ)
    return ToldBook(connect(settings.require_redis()), RouterKeys(settings.key_prefix))


@click.group()
def reconcile() -> None:
    """The reconciler: Datadog's truth against what each callback was last told."""


@reconcile.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def reconcile_status(as_json: bool) -> None:
    """The last cycle, and every (monitor, callback) with what it was last told."""
    book = _book()
    values = book.redis.hmget(book.keys.reconcile_status, list(RECONCILE_STATUS_FIELDS))
    health = reconciler_health(
        {k: str(v) for k, v in zip(RECONCILE_STATUS_FIELDS, values, strict=True) if v}
    )
    outcomes = book.monitor_outcomes()
    targets: list[dict[str, Any]] = [
        {
            "monitor_id": target.monitor_id,
            "url": mask_credentials(target.url),
            "since": when(target.since_ms),
            "last_reconcile": outcomes.get(target.monitor_id),
            "told": {group: told.status for group, told in sorted(book.told(target).items())},
        }
        for target in book.targets()
    ]
    if as_json:
        emit_json({"reconciler": health, "targets": targets})
        return
    last = when(health["last_success_ms"]) if health.get("last_success_ms") else "never"
    click.echo(f"reconciler: {health['status']}, last complete cycle {last}")
    if health.get("last_error"):
        click.echo(f"    last problem: {health['last_error']}")
    if not targets:
        click.echo("No monitor has delivered to a callback yet: nothing to reconcile.")
    for row in targets:
        outcome = (row["last_reconcile"] or {}).get("outcome", "not yet reconciled")
        click.echo(f"monitor {row['monitor_id']}  {row['url']}  {outcome}")
        for group, status in row["told"].items():
            click.echo(f"    told {group}: {status}")


@reconcile.command("forget")
@click.argument("monitor_id")
def reconcile_forget(monitor_id: str) -> None:
    """Stop reconciling a monitor (e.g. one deleted in Datadog) for every callback."""
    forgotten = _book().forget_monitor(monitor_id)
    if not forgotten:
        raise click.UsageError(
            f"monitor {monitor_id} is not reconciled; "
            "`router reconcile status` lists the monitors that are"
        )
    click.echo(f"monitor {monitor_id}: no longer reconciled for {forgotten} callback(s)")
