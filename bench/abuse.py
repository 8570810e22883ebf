"""Abuse run: schemathesis against a real gunicorn + Redis, then hypothesis against every parser.

1. gunicorn serves the router web (2 workers) on a free loopback port, on the bench Redis under a
   key prefix of its own. Schemathesis reads `/openapi.json` from it and sends `--examples`
   valid and as many invalid requests per operation (most with the right credentials, so they
   reach the parsers), over real HTTP. Printed: cases, answers by status, 5xx (must be 0), 4xx
   from /webhooks/ and /api/ without a JSON `{"error": ...}` (must be 0), answers whose status
   or Content-Type the description does not list (must be 0), and the tracebacks gunicorn
   logged (must be 0).
2. `tests/test_parsers_property.py` with `--parser-examples` examples per property, seeds
   random (not the suite's fixed ones): only each parser's documented error may escape.

Exits 1 if any count that must be 0 is not.

    PYTHONPATH=. .venv/bin/python bench/abuse.py [--examples 50] [--parser-examples 2000]
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import httpx
import redis
from _common import ROOT, delete_prefixed, environment_line, redis_url, unique_prefix

from router.devserver import web_command
from tests.abuse_fuzz import ADMIN_TOKEN, fuzz
from tests.conftest import free_port
from tests.support import process, router_env, wait_http

# gunicorn's log line for an exception the app did not expect (router.app's catch-all).
UNEXPECTED = "unexpected error"


def schemathesis_run(examples: int, logs: Path) -> int:
    """Fuzz a real gunicorn; returns how many of the must-be-zero counts were not."""
    prefix = unique_prefix()
    port = free_port()
    env = router_env(redis_url(), prefix, ROUTER_ADMIN_TOKEN=ADMIN_TOKEN)
    base_url = f"http://127.0.0.1:{port}"
    log_path = logs / "web.log"
    started = time.monotonic()
    try:
        with process(web_command(port), env, log_path=log_path):
            wait_http(f"{base_url}/healthz")
            document = httpx.get(f"{base_url}/openapi.json", timeout=10).json()
            report = fuzz(
                document,
                lambda case, headers: case.call(base_url=base_url, headers=headers, timeout=30),
                examples=examples,
                randomize=True,
            )
    finally:
        client = redis.Redis.from_url(redis_url())
        delete_prefixed(client, prefix)
        client.close()
    elapsed = time.monotonic() - started
    logged = log_path.read_text(errors="replace").count(UNEXPECTED)
    operations = len({(m, p) for p, item in document["paths"].items() for m in item})
    print(
        f"schemathesis: {operations} operations x {examples} valid + {examples} invalid "
        f"requests each, against gunicorn on {base_url} ({elapsed:.0f} s)"
    )
    print(f"  {report.summary()}")
    print(f"  tracebacks in gunicorn's log: {logged}")
    for case in report.server_errors[:10]:
        print(f"  5xx: {case}")
    for case in report.unreadable_refusals[:10]:
        print(f"  4xx without a JSON error: {case}")
    for case in report.undescribed_answers[:10]:
        print(f"  not in the description: {case}")
    if report.not_generated:
        print(f"  {len(report.not_generated)} operation/mode pairs had no case to make:")
        for line in report.not_generated:
            print(f"    {line}")
    return sum(
        1
        for bad in (
            report.server_error_count,
            len(report.unreadable_refusals),
            len(report.undescribed_answers),
            logged,
        )
        if bad
    )


def property_run(examples: int) -> int:
    """The parser properties with `examples` random examples each; returns pytest's exit code."""
    env = {**os.environ, "ABUSE_EXAMPLES": str(examples), "ABUSE_RANDOM": "1"}
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "timeout=0",  # thousands of examples outlast the suite's per-test bound
            "tests/test_parsers_property.py",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.monotonic() - started
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    closing = lines[-1] if lines else "(no output)"
    print(
        f"hypothesis: tests/test_parsers_property.py at {examples} examples per property "
        f"({elapsed:.0f} s): {closing}"
    )
    if result.returncode != 0:
        print("\n".join(lines[-40:]))
    return result.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=50, help="per operation and mode")
    parser.add_argument("--parser-examples", type=int, default=2000, help="per property")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the cases are junk on purpose; the counts say enough
    client = redis.Redis.from_url(redis_url())
    print(environment_line(client))
    client.close()
    with TemporaryDirectory(prefix="abuse-") as tmp:
        bad = schemathesis_run(args.examples, Path(tmp))
    bad += 1 if property_run(args.parser_examples) else 0
    print("abuse run: " + ("OK, zero 5xx" if not bad else f"{bad} problem(s), see above"))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
