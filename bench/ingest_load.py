"""Ingest under load: POST /webhooks/datadog on the router against a bare Flask endpoint.

Both are served by gunicorn with the same settings (`router.devserver.web_command`: the
router's `router.gunicorn_conf`, 2 workers), one after the other, in rounds; `wrk` (C, from
Debian's package, installed by scripts/ensure-wrk) keeps `--connections` requests in flight for
`--duration` seconds against each. Every router request is a new Datadog notification (its own
event id) with one callback line, so each 202 is a delivery written to Redis: a redis-server
this script starts on a free port with `--appendonly yes --appendfsync everysec` in a temp
dir. The baseline is the bare endpoint (`bench/_bare_app.py`: reads the body, answers 202) in
the same run; the figure is router / bare, throughput and p99. After each router round the
stream is counted: every 202 must be a delivery in Redis.

    .venv/bin/python bench/ingest_load.py [--duration 10] [--connections 16] [--rounds 2]
                                          [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

import redis
from _common import ROOT, unique_prefix
from _processes import appending_redis, children, cpu_seconds

from router import gunicorn_conf
from router.demo import datadog_payload
from router.devserver import web_command
from router.keys import RouterKeys
from tests.conftest import free_port
from tests.support import INBOUND_TOKEN, process, router_env, wait_http

ROUTE = "/webhooks/datadog"
BARE_APP = "bench._bare_app:create_app()"
# Stands for the event id in the body; each request gets its own (see WRK_SCRIPT).
EVENT_ID_MARK = "EVENTIDMARK"
# wrk's threads: one per CPU would starve the servers on a 2-core machine; one keeps up.
WRK_THREADS = 1
WARMUP_S = 1.0
# Event ids of one wrk run: base + thread * 10^9 + request number; a run never reuses another's.
_EVENT_ID_BASES = itertools.count(10**13, 10**11)

# Every request a new notification: the event id is a per-thread counter after a per-run base.
# `done` prints one JSON line the script reads; latencies are in microseconds.
WRK_SCRIPT = """
local parts = {%(parts)s}
local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer %(token)s"}
local threads = {}
function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end
function init(args)
  sent, not_202, first = 0, 0, nil
end
function request()
  sent = sent + 1
  local id = string.format("%%d", %(base)d + tid * 1000000000 + sent)
  return wrk.format("POST", "%(path)s", headers, table.concat(parts, id))
end
function response(status, headers, body)
  if status ~= 202 then
    not_202 = not_202 + 1
    if first == nil then first = status .. " " .. string.sub(body, 1, 200) end
  end
end
function done(summary, latency, requests)
  local bad, sample = 0, ""
  for _, thread in ipairs(threads) do
    bad = bad + thread:get("not_202")
    sample = thread:get("first") or sample
  end
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests": %%d, "duration_us": %%d, "not_202": %%d, "socket_errors": %%d, ' ..
    '"timeouts": %%d, "p50_us": %%d, "p99_us": %%d, "max_us": %%d, "sample": %%q}\\n',
    summary.requests, summary.duration, bad, e.connect + e.read + e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, sample))
end
"""


@dataclass(frozen=True)
class Result:
    label: str
    requests: int
    seconds: float
    not_202: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    web_cpu_s: float
    redis_cpu_s: float
    redis_calls: int
    in_stream: int | None = None

    @property
    def per_s(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_us(self) -> float:
        """CPU of the web workers and Redis per answered request (wrk's own not counted)."""
        return (self.web_cpu_s + self.redis_cpu_s) / self.requests * 1e6

    def line(self) -> str:
        durable = (
            ""
            if self.in_stream is None
            else f"   deliveries in Redis {self.in_stream:>7}   script calls per request "
            f"{self.redis_calls / self.requests:.2f}"
        )
        return (
            f"{self.label:<22} {self.per_s:7.0f} req/s   p50 {self.p50_ms:6.2f} ms   "
            f"p99 {self.p99_ms:7.2f} ms   max {self.max_ms:7.1f} ms   "
            f"CPU/request {self.cpu_us:5.0f} us (web {self.web_cpu_s / self.requests * 1e6:4.0f}"
            f" + redis {self.redis_cpu_s / self.requests * 1e6:3.0f})   "
            f"answers {self.requests:>7}   not 202 {self.not_202}   "
            f"socket errors {self.socket_errors}{durable}"
        )


def require_wrk() -> str:
    found = shutil.which("wrk")
    if found is None:
        subprocess.run([str(ROOT / "scripts" / "ensure-wrk")], check=True)
        found = shutil.which("wrk")
    if found is None:
        raise SystemExit("wrk is not on the PATH: run scripts/ensure-wrk (apt-get install wrk)")
    return found


def redis_calls(stream_of: tuple[redis.Redis, str] | None) -> int:
    """Script calls (EVALSHA, EVAL) Redis has run so far: one per batch of enqueues."""
    if stream_of is None:
        return 0
    stats = stream_of[0].info("commandstats")
    return sum(
        int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval")
    )


def stream_length(stream_of: tuple[redis.Redis, str] | None) -> int:
    if stream_of is None:
        return 0
    client, stream = stream_of
    return int(client.xlen(stream))


def wrk_script(tmp: Path) -> Path:
    """A wrk script whose event ids no other run of this process uses (a new base each time)."""
    base = next(_EVENT_ID_BASES)
    body = json.dumps(
        datadog_payload(
            "http://127.0.0.1:9/breaker/callback",
            event_id=EVENT_ID_MARK,
            monitor_id="7000001",
            scope="bank_code:0001",
            date_ms=int(time.time() * 1000),
        )
    )
    parts = ", ".join(f"[==[{part}]==]" for part in body.split(EVENT_ID_MARK))
    script = tmp / f"ingest-{base}.lua"
    script.write_text(
        WRK_SCRIPT % {"parts": parts, "token": INBOUND_TOKEN, "base": base, "path": ROUTE}
    )
    return script


def run_wrk(wrk: str, url: str, script: Path, seconds: float, connections: int) -> dict[str, int]:
    args = [
        wrk, "--threads", str(WRK_THREADS), "--connections", str(connections),
        "--duration", f"{max(1, round(seconds))}s", "--timeout", "10s", "--script", str(script),
        url + ROUTE,
    ]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60, check=True)
    for line in done.stdout.splitlines():
        if line.startswith("WRK "):
            return json.loads(line[4:])  # type: ignore[no-any-return]
    raise SystemExit(f"wrk printed no figures:\n{done.stdout}\n{done.stderr}")


def measure(
    label: str,
    *,
    app: str,
    env: dict[str, str],
    tmp: Path,
    wrk: str,
    seconds: float,
    connections: int,
    redis_pid: int,
    stream_of: tuple[redis.Redis, str] | None = None,
) -> Result:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp / f"{label.replace(' ', '-')}-{port}.log"
    with process(web_command(port, app=app), env, log_path=log_path) as web:
        wait_http(f"{base}/readyz")
        run_wrk(wrk, base, wrk_script(tmp), WARMUP_S, connections)
        workers = children(web.pid)
        stream_before = stream_length(stream_of)
        web_before, redis_before = cpu_seconds(workers), cpu_seconds([redis_pid])
        calls_before = redis_calls(stream_of)
        figures = run_wrk(wrk, base, wrk_script(tmp), seconds, connections)
        web_cpu = cpu_seconds(workers) - web_before
        redis_cpu = cpu_seconds([redis_pid]) - redis_before
        calls = redis_calls(stream_of) - calls_before
        in_stream = None if stream_of is None else stream_length(stream_of) - stream_before
    if figures["sample"]:
        print(f"{label}: first answer that was not 202: {figures['sample']}", file=sys.stderr)
    return Result(
        label,
        requests=figures["requests"],
        seconds=figures["duration_us"] / 1e6,
        not_202=figures["not_202"],
        socket_errors=figures["socket_errors"] + figures["timeouts"],
        p50_ms=figures["p50_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
        max_ms=figures["max_us"] / 1000,
        web_cpu_s=web_cpu,
        redis_cpu_s=redis_cpu,
        redis_calls=calls,
        in_stream=in_stream,
    )


def gunicorn_settings() -> str:
    worker = getattr(gunicorn_conf, "worker_class", "sync")
    threads = getattr(gunicorn_conf, "threads", 1)
    described = f"gunicorn {worker} worker class, {threads} thread(s) per worker, 2 workers"
    overrides = os.environ.get("GUNICORN_CMD_ARGS")
    return f"{described} (overridden: GUNICORN_CMD_ARGS={overrides!r})" if overrides else described


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    parser.add_argument("--connections", type=int, default=16, help="requests kept in flight")
    parser.add_argument("--rounds", type=int, default=2, help="bare + router runs, alternated")
    parser.add_argument("--quick", action="store_true", help="one round of 3 s")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.rounds = 3.0, 1
    wrk = require_wrk()
    bare: list[Result] = []
    routed: list[Result] = []
    with TemporaryDirectory(prefix="ingest-load-") as tmp_name:
        tmp = Path(tmp_name)
        with appending_redis(tmp) as url:
            client = redis.Redis.from_url(url)
            server = client.info("server")
            version = server["redis_version"]
            common = dict(
                tmp=tmp,
                wrk=wrk,
                seconds=args.duration,
                connections=args.connections,
                redis_pid=int(server["process_id"]),
            )
            for round_no in range(1, args.rounds + 1):
                prefix = unique_prefix()
                env = router_env(url, prefix)
                env.pop("ROUTER_RETRY_SCHEDULE")  # the production default
                bare.append(
                    measure(f"bare Flask, round {round_no}", app=BARE_APP, env=env, **common)  # type: ignore[arg-type]
                )
                stream = (client, RouterKeys(prefix).stream)
                routed.append(
                    measure(
                        f"router, round {round_no}",
                        app="router.app:create_app()",
                        env=env,
                        stream_of=stream,
                        **common,  # type: ignore[arg-type]
                    )
                )
            aof = sum(path.stat().st_size for path in tmp.rglob("*.aof"))
    print(
        f"POST {ROUTE}: wrk {WRK_THREADS} thread, {args.connections} connections, "
        f"{args.duration:.0f} s per run after {WARMUP_S:.0f} s of warm-up; {gunicorn_settings()}; "
        f"redis-server {version} --appendonly yes --appendfsync everysec; {os.cpu_count()} CPUs"
    )
    for result in [r for pair in zip(bare, routed, strict=True) for r in pair]:
        print(result.line())
    best_bare = max(bare, key=lambda r: r.per_s)
    best_router = max(routed, key=lambda r: r.per_s)
    lost = [r.label for r in routed if (r.in_stream or 0) < r.requests - r.not_202]
    print(
        "router / bare Flask, best round of each: "
        f"throughput {best_router.per_s / best_bare.per_s:.2f}x "
        f"({best_router.per_s:.0f} / {best_bare.per_s:.0f} req/s), "
        f"p99 {best_router.p99_ms / best_bare.p99_ms:.2f}x "
        f"({best_router.p99_ms:.1f} / {best_bare.p99_ms:.1f} ms); "
        f"median over rounds: throughput {median_ratio(routed, bare, lambda r: r.per_s):.2f}x, "
        f"CPU per request {median_ratio(routed, bare, lambda r: r.cpu_us):.2f}x; "
        f"append-only file {aof / 1e6:.1f} MB; "
        + (f"LOST deliveries in {lost}" if lost else "every 202 is a delivery in Redis")
    )


def median_ratio(
    routed: list[Result], bare: list[Result], figure: Callable[[Result], float]
) -> float:
    return statistics.median(map(figure, routed)) / statistics.median(map(figure, bare))


if __name__ == "__main__":
    main()
