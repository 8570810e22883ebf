"""Where a webhook's CPU goes inside the web process: the WSGI apps called in-process.

No HTTP and no gunicorn: the router's app (`router.app:create_app()`) and the bare endpoint
of `bench/ingest_load.py` (`bench/_bare_app.py`) are called as WSGI callables with the same
request `bench/ingest_load.py` sends (a new event id each time), from one thread and from 16
threads at once (as gunicorn's gthread workers do), and the process's CPU time
(`time.process_time()`, all threads) is divided by the requests. The router runs three ways:

- as it is, storing every notification in Redis (group commit across the threads);
- with `DeliveryQueue.enqueue_many` replaced by an answer without Redis: the rest of the
  router's own work;
- that, with its INFO lines off (the web's one `queued` line a delivery): what logging costs.

    PYTHONPATH=. .venv/bin/python bench/ingest_split.py [--requests 2000] [--rounds 3]

Redis is 127.0.0.1:6379 unless BENCH_REDIS_URL says otherwise (keys under a unique prefix,
deleted at the end). Log lines go to /dev/null through the router's own handler. Asserts
nothing; the absolute figures move with the machine's load, the ratios much less.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import logging
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import redis
from _bare_app import create_app as create_bare_app
from _common import delete_prefixed, environment_line, redis_url, unique_prefix

from router.app import create_app
from router.config import parse_log_settings
from router.demo import datadog_payload
from router.logs import BufferedStreamHandler, formatter, setup_logging
from router.model import Notification
from router.queue import Enqueued, delivery_id_for
from tests.support import INBOUND_TOKEN, router_env

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
THREADS = 16
_EVENT_IDS = itertools.count(int(time.time() * 1000))


def request_environ() -> dict[str, Any]:
    """The POST bench/ingest_load.py sends, with an event id no other request has."""
    body = json.dumps(
        datadog_payload(
            "http://127.0.0.1:9/breaker/callback",
            event_id=str(next(_EVENT_IDS)),
            monitor_id="7000001",
            scope="bank_code:0001",
            date_ms=int(time.time() * 1000),
        )
    ).encode()
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/webhooks/datadog",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_AUTHORIZATION": f"Bearer {INBOUND_TOKEN}",
    }


def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
    if not status.startswith("202"):
        raise SystemExit(f"the app answered {status}, not 202")


def cpu_per_request_us(app: WsgiApp, requests: int, threads: int) -> float:
    """CPU time of the whole process per request, `requests` spread over `threads`."""
    per_thread = [[request_environ() for _ in range(requests // threads)] for _ in range(threads)]

    def serve(environs: list[dict[str, Any]]) -> None:
        for environ in environs:
            b"".join(app(environ, start_response))

    workers = [threading.Thread(target=serve, args=(chunk,)) for chunk in per_thread]
    started = time.process_time()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return (time.process_time() - started) / (len(per_thread[0]) * threads) * 1e6


def without_redis(
    notifications: Sequence[Notification], counted: Sequence[Any] = ()
) -> list[list[Enqueued]]:
    """What `enqueue_many` answers, every delivery new, without a round trip."""
    return [
        [Enqueued(delivery_id_for(n.dedup_key, url), url, True) for url in n.callback_urls]
        for n in notifications
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000, help="requests per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per figure (median)")
    args = parser.parse_args()
    url, prefix = redis_url(), unique_prefix()
    env = router_env(url, prefix)
    env.pop("ROUTER_RETRY_SCHEDULE")  # the production default
    os.environ.update(env)
    # The web's own handler and format (router.gunicorn_conf), writing to /dev/null.
    log_format, level = parse_log_settings(os.environ)
    setup_logging(log_format, level, buffered=True)
    devnull = open(os.devnull, "w")  # noqa: SIM115 (open until the process ends)
    handler = BufferedStreamHandler(devnull)
    handler.setFormatter(formatter(log_format))
    logging.getLogger().handlers = [handler]
    logging.getLogger().setLevel(level)
    bare, router = create_bare_app(), create_app()
    queue = router.extensions["router.queue"]
    stored = queue.enqueue_many

    def router_without_redis() -> None:
        queue.enqueue_many = without_redis

    def router_without_redis_or_info_lines() -> None:
        router_without_redis()  # says so itself, not by following the variant before it
        logging.getLogger("router").setLevel(logging.WARNING)

    variants: list[tuple[str, WsgiApp, Callable[[], None]]] = [
        ("bare Flask endpoint", bare, lambda: None),
        ("router", router, lambda: None),
        ("router, enqueue without Redis", router, router_without_redis),
        ("router, without Redis or INFO lines", router, router_without_redis_or_info_lines),
    ]
    client = redis.Redis.from_url(url)
    print(environment_line(client))
    print(f"CPU per request (process time, all threads), median of {args.rounds} x {args.requests}")
    baseline: dict[int, float] = {}
    try:
        for label, app, prepare in variants:
            prepare()
            figures = []
            for threads in (1, THREADS):
                cpu_per_request_us(app, 200, threads)  # warm-up
                median = statistics.median(
                    cpu_per_request_us(app, args.requests, threads) for _ in range(args.rounds)
                )
                baseline.setdefault(threads, median)
                ratio = median / baseline[threads]
                figures.append(f"{threads:2d} thread(s) {median:6.0f} us ({ratio:4.1f}x bare)")
            print(f"{label:38s} " + "   ".join(figures))
    finally:
        queue.enqueue_many = stored
        delete_prefixed(client, prefix)


if __name__ == "__main__":
    main()
