"""Fault injection: storms through real router processes while something breaks, on loopback.

Each scenario starts its own `redis-server --appendonly yes` (temporary directory, free
port), gunicorn serving the router web, `router worker` processes and a callback endpoint that
records every `webhook-id`; some also start the stub Datadog API and the example service. It
POSTs a storm of Datadog notifications, breaks something during it, waits (bounded) until
every accepted delivery has reached the callback or the dead-letter queue, and prints per run:
sent, accepted (202), delivered (unique webhook-ids received), duplicated (a webhook-id
received again), dead-lettered, lost (accepted - delivered - dead-lettered; must be 0) and
the 5xx answers the sender saw, by status. Exits 1 if anything is lost or a check fails.

    PYTHONPATH=. .venv/bin/python bench/faults.py all [--quick] [--notifications N]
    PYTHONPATH=. .venv/bin/python bench/faults.py worker-sigkill redis-restart ...

Scenarios: worker-sigkill, redis-restart, redis-kill, callback-outage, datadog-errors,
out-of-order, dropped-recovery. `--quick` is the CI size (200 notifications, shorter outages).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from tempfile import TemporaryDirectory

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.fault_breakers import dropped_recovery, out_of_order  # noqa: E402
from bench.fault_scenarios import (  # noqa: E402
    Result,
    Run,
    callback_outage,
    datadog_errors,
    redis_kill,
    redis_restart,
    worker_sigkill,
)

SCENARIOS: dict[str, Callable[[Run], Result]] = {
    "worker-sigkill": worker_sigkill,
    "redis-restart": redis_restart,
    "redis-kill": redis_kill,
    "callback-outage": callback_outage,
    "datadog-errors": datadog_errors,
    "out-of-order": out_of_order,
    "dropped-recovery": dropped_recovery,
}
DEFAULT_NOTIFICATIONS = 2000
QUICK_NOTIFICATIONS = 200
# POSTs per second: a storm lasts seconds, long enough for a fault to land in its middle.
DEFAULT_RATE = 200.0
QUICK_RATE = 50.0


def run_scenarios(
    names: list[str], *, notifications: int, rate: float, quick: bool, logs: Path | None
) -> list[Result]:
    results = []
    with TemporaryDirectory(prefix="faults-") as tmp:
        for name in names:
            workdir = (logs or Path(tmp)) / name
            began = time.monotonic()
            print(f"== {name}", flush=True)
            result = SCENARIOS[name](Run(workdir, notifications, rate, quick))
            print_result(result)
            print(f"   {'ok' if result.ok else 'FAILED'} in {time.monotonic() - began:.0f} s")
            results.append(result)
    return results


def print_result(result: Result) -> None:
    for label, totals in result.accounts:
        print("   " + totals.line(label))
    for note in result.notes:
        print(f"   {note}")
    for what, ok in result.checks:
        print(f"   [{'ok' if ok else 'FAIL'}] {what}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("scenarios", nargs="+", choices=[*SCENARIOS, "all"], metavar="SCENARIO")
    parser.add_argument("--quick", action="store_true", help="the CI size: 200 notifications")
    parser.add_argument("--notifications", type=int, help="per storm (default 2000)")
    parser.add_argument("--rate", type=float, help="POSTs per second (default 200)")
    parser.add_argument("--logs", type=Path, help="keep Redis data and process logs here")
    args = parser.parse_args(argv)
    names = list(SCENARIOS) if "all" in args.scenarios else list(dict.fromkeys(args.scenarios))
    notifications = args.notifications or (
        QUICK_NOTIFICATIONS if args.quick else DEFAULT_NOTIFICATIONS
    )
    rate = args.rate or (QUICK_RATE if args.quick else DEFAULT_RATE)
    results = run_scenarios(
        names, notifications=notifications, rate=rate, quick=args.quick, logs=args.logs
    )
    lost = sum(totals.lost for r in results for _, totals in r.accounts)
    failed = [r.name for r in results if not r.ok]
    print(f"== {len(results)} scenarios, lost {lost}, failed: {', '.join(failed) or 'none'}")
    if failed and args.logs is None:
        print("   re-run with --logs DIR to keep every process's log")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
