"""From a Datadog webhook POST to a breaker reading open, through every real process.

Starts gunicorn (the router web, 2 workers), one `router worker` and the example service
(`python -m services_example`) against the Redis at 127.0.0.1:6379 (or BENCH_REDIS_URL),
then sends --alerts alerts one at a time, each for a different bank code: POST
/webhooks/datadog with the README's recommended payload (`router.demo.datadog_payload`),
then spin (50 us sleeps) on `Breakers.is_open("bank-charge", code)` in THIS process, which
follows the same Redis and prefix as the service. Timed: POST start -> 202 answered, and
POST start -> `is_open` true here. Path: web -> stream -> worker -> signed callback ->
service writes (Lua) -> change channel -> this process's snapshot. After each alert the
service's `POST /charges` is asked (untimed) until it answers 503; the count of first asks
that did shows whether the service refused by the time this process saw the breaker open.

Baselines in the same run: `GET /healthz` on the router (an HTTP round trip to gunicorn; the
router has no POST /healthz) and `POST /charges` on the service for a closed bank (201).

    .venv/bin/python bench/alert_to_open.py [--alerts 200] [--quick]

Isolation: the router uses a unique ROUTER_KEY_PREFIX `bench-<hex>` and the service is given
BREAKERS_PREFIX `bench-<hex>-breakers`; all their keys are deleted at the end. A service
that ignores BREAKERS_PREFIX writes under the default `breakers`: an untimed warm-up alert
tells which prefix it used. For that case every bank code is one with no breaker under
`breakers` yet, and at the end exactly those breakers (state, history, index entry) and
this run's `seen` markers are deleted, and their names published on the change channel so
other processes following `breakers` drop them. Processes are stopped by pid.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path

import httpx
import redis
from _common import delete_prefixed, environment_line, latency_line, redis_url, unique_prefix
from breaker_client import Breakers

from router.demo import datadog_payload
from router.devserver import web_command
from router.keys import DEFAULT_BREAKER_PREFIX, BreakerKeys
from services_example.app import BANK_BREAKER
from tests.conftest import free_port
from tests.support import (
    INBOUND_TOKEN,
    SIGNING_SECRET,
    process,
    router_command,
    router_env,
    wait_for,
    wait_http,
)

OPEN_TIMEOUT_S = 10.0
SPIN_SLEEP_S = 50e-6
STARTUP_TIMEOUT_S = 30.0
REFUSE_TIMEOUT_S = 2.0
AUTH = {"Authorization": f"Bearer {INBOUND_TOKEN}"}


def refuses(http: httpx.Client, service: str, code: str) -> bool:
    """Whether the service refuses a charge for bank `code` now (its breaker is open)."""
    answer = http.post(f"{service}/charges", json={"bank_code": code, "amount": 1})
    return answer.status_code == 503


def post_alert(
    http: httpx.Client, router: str, service: str, code: str, monitor_id: str
) -> tuple[float, float, list[str]]:
    """POST one alert for bank `code`; (perf_counter at start, ms to the 202, delivery ids)."""
    payload = datadog_payload(
        f"{service}/breaker/callback",
        event_id=str(random.randrange(10**11, 10**12)),
        monitor_id=monitor_id,
        scope=f"bank_code:{code},env:prod",
        date_ms=int(time.time() * 1000),
    )
    started = time.perf_counter()
    response = http.post(f"{router}/webhooks/datadog", json=payload, headers=AUTH)
    accepted_ms = (time.perf_counter() - started) * 1000
    if response.status_code != 202:
        raise SystemExit(f"router answered {response.status_code}: {response.text}")
    return started, accepted_ms, [d["id"] for d in response.json()["deliveries"]]


def wait_open(followed: Mapping[str, Breakers], code: str, started: float, logs: Path) -> str:
    """Spin until bank `code` reads open in one of `followed`; returns that one's prefix."""
    deadline = started + OPEN_TIMEOUT_S
    while True:
        for prefix, breakers in followed.items():
            if breakers.is_open(BANK_BREAKER, code):
                return prefix
        if time.perf_counter() > deadline:
            raise SystemExit(f"bank {code} not open after {OPEN_TIMEOUT_S}s; logs in {logs}")
        time.sleep(SPIN_SLEEP_S)


def free_bank_codes(client: redis.Redis, keys: BreakerKeys, count: int) -> list[str]:
    """`count` 4-digit bank codes with no `bank-charge` breaker under `keys` yet."""
    taken = {
        str(member).split(":", 1)[1]
        for member in client.smembers(keys.index)
        if str(member).startswith(f"{BANK_BREAKER}:")
    }
    free = [f"{n:04d}" for n in range(10_000) if f"{n:04d}" not in taken]
    codes = random.sample(free, count)
    existing = [code for code in codes if client.exists(keys.record(f"{BANK_BREAKER}:{code}"))]
    if existing:
        raise SystemExit(f"bank codes already have breakers: {existing}; run again")
    return codes


def clean_shared_breakers(
    client: redis.Redis, keys: BreakerKeys, codes: list[str], delivery_ids: list[str]
) -> None:
    """Delete exactly this run's breakers and markers under a prefix others may use too."""
    members = [keys.member(BANK_BREAKER, code) for code in codes]
    pipe = client.pipeline(transaction=False)
    for member in members:
        pipe.delete(keys.record(member), keys.history(member))
        pipe.srem(keys.index, member)
    for delivery_id in delivery_ids:
        pipe.delete(keys.delivery_seen(delivery_id))
    pipe.execute()
    # Every process following this prefix re-reads these members, finds nothing, drops them.
    for member in members:
        client.publish(keys.channel, member)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--alerts", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="50 alerts")
    args = parser.parse_args()
    alerts = 50 if args.quick else args.alerts

    url = redis_url()
    prefix = unique_prefix()
    breakers_prefix = f"{prefix}-breakers"
    logs = Path(os.environ.get("TMPDIR", "/tmp")) / prefix
    logs.mkdir(parents=True)
    client = redis.Redis.from_url(url, decode_responses=True)
    shared = BreakerKeys(DEFAULT_BREAKER_PREFIX)
    warm_code, closed_code, *codes = free_bank_codes(client, shared, alerts + 2)
    monitor_id = str(random.randrange(10**8, 10**9))
    delivery_ids: list[str] = []
    followed = {
        p: Breakers.from_url(url, prefix=p) for p in (breakers_prefix, DEFAULT_BREAKER_PREFIX)
    }
    used: str | None = None
    try:
        service_port, web_port = free_port(), free_port()
        service = f"http://127.0.0.1:{service_port}"
        router = f"http://127.0.0.1:{web_port}"
        env = router_env(
            url,
            prefix,
            ROUTER_CALLBACK_ALLOW=f"{service}/",
            ROUTER_LOG_LEVEL="WARNING",
            DD_API_KEY="",  # no enrichment: the notified group alone is written
            DD_APP_KEY="",
        )
        service_env = {
            "PORT": str(service_port),
            "REDIS_URL": url,
            "ROUTER_SIGNING_SECRET": SIGNING_SECRET,
            "BREAKERS_PREFIX": breakers_prefix,
            "LOG_LEVEL": "WARNING",
        }
        web_args = web_command(web_port)
        with (
            process([sys.executable, "-m", "services_example"], service_env,
                    log_path=logs / "service.log"),
            process(web_args, env, log_path=logs / "web.log"),
            process(router_command("worker"), env, log_path=logs / "worker.log"),
        ):  # fmt: skip
            wait_http(f"{router}/readyz", timeout=STARTUP_TIMEOUT_S)
            wait_http(f"{service}/healthz", timeout=STARTUP_TIMEOUT_S)
            for breakers in followed.values():
                if not breakers.wait_ready(5):
                    raise SystemExit(f"breakers snapshot did not load from {url}")
            with httpx.Client(timeout=10) as http:
                # Warm-up, untimed: connections, lazy imports, and which prefix the service uses.
                started, _, ids = post_alert(http, router, service, warm_code, monitor_id)
                delivery_ids += ids
                used = wait_open(followed, warm_code, started, logs)
                breakers = followed[used]

                healthz, charge_ok = [], []
                for _ in range(alerts):
                    started = time.perf_counter()
                    assert http.get(f"{router}/healthz").status_code == 200
                    healthz.append((time.perf_counter() - started) * 1000)
                    started = time.perf_counter()
                    answer = http.post(
                        f"{service}/charges", json={"bank_code": closed_code, "amount": 1}
                    )
                    assert answer.status_code == 201, answer.text
                    charge_ok.append((time.perf_counter() - started) * 1000)

                accepted: list[float] = []
                opened: list[float] = []
                late_ms: list[float] = []
                refused_first = 0
                for code in codes:
                    started, accepted_ms, ids = post_alert(http, router, service, code, monitor_id)
                    accepted.append(accepted_ms)
                    delivery_ids += ids
                    wait_open({used: breakers}, code, started, logs)
                    seen = time.perf_counter()
                    opened.append((seen - started) * 1000)
                    if refuses(http, service, code):
                        refused_first += 1
                    else:
                        wait_for(
                            partial(refuses, http, service, code),
                            timeout=REFUSE_TIMEOUT_S,
                            interval=0.001,
                            what=f"the service to refuse bank {code}",
                        )
                        late_ms.append((time.perf_counter() - seen) * 1000)
            # The last callback may still be setting its `seen` marker; wait, bounded.
            last_seen = BreakerKeys(used).delivery_seen(delivery_ids[-1])
            wait_for(lambda: client.exists(last_seen), timeout=5, what="the last seen marker")
        print(environment_line(client))
        print(
            f"{alerts} alerts, one at a time, each a new bank code; gunicorn 2 workers + "
            "1 router worker + services_example (Flask threaded), no Datadog enrichment; "
            f"service breakers under {used!r}; this process spins on is_open with "
            f"{SPIN_SLEEP_S * 1e6:.0f} us sleeps"
        )
        print(latency_line("baseline: GET router /healthz", healthz))
        print(latency_line("baseline: POST service /charges (201)", charge_ok))
        print(latency_line("router: POST /webhooks/datadog answered 202", accepted))
        print(latency_line("POST start -> is_open true in this process", opened))
        late = f"; the others within {max(late_ms):.1f} ms" if late_ms else ""
        print(
            f"service answered 503 to the first /charges sent after is_open was true here: "
            f"{refused_first}/{alerts}{late}"
        )
        base = statistics.median(healthz)
        print(
            f"alert -> open p50 / GET /healthz p50: {statistics.median(opened) / base:.1f}x; "
            f"202 p50 / GET /healthz p50: {statistics.median(accepted) / base:.1f}x"
        )
    finally:
        for breakers in followed.values():
            breakers.stop()
        if used != breakers_prefix:  # the service may have written under the shared prefix
            all_codes = [warm_code, closed_code, *codes]
            clean_shared_breakers(client, shared, all_codes, delivery_ids)
        delete_prefixed(client, prefix, breakers_prefix)
        client.close()


if __name__ == "__main__":
    main()
