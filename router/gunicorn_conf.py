"""gunicorn settings for the router web (`gunicorn -c python:router.gunicorn_conf ...`).

gunicorn owns logging in its processes: this hands it the router's handler and format
(`ROUTER_LOG_FORMAT`, `ROUTER_LOG_LEVEL`), so its own lines and the app's come out alike.
Serving the router's app, the master also checks the web's settings once, before any worker
boots: a missing or malformed setting is one line each on stderr and exit code 2, instead of
every worker's traceback and gunicorn's "Worker failed to boot"; then it warns when Redis
would not keep what the router acknowledges (`router.redis_check`).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from router.config import DEFAULT_LOG_FORMAT, DEFAULT_LOG_LEVEL, parse_log_settings, settings_for
from router.errors import ConfigError
from router.logs import dict_config, flush_handlers, skip_caller_lookup
from router.redis_check import warn_if_not_durable

try:
    logconfig_dict = dict_config(*parse_log_settings(os.environ), buffered=True)
except ConfigError:  # reported with every other problem by on_starting
    logconfig_dict = dict_config(DEFAULT_LOG_FORMAT, DEFAULT_LOG_LEVEL, buffered=True)  # type: ignore[arg-type]
skip_caller_lookup()

ROUTER_APP = "router.app:"


def on_starting(server: Any) -> None:
    """gunicorn's hook in the master, before it binds or boots a worker."""
    if not str(getattr(server.app, "app_uri", "") or "").startswith(ROUTER_APP):
        return  # another app under these settings (bench/_bare_app.py)
    try:
        settings = settings_for(os.environ, "web")
    except ConfigError as exc:
        flush_handlers()  # gunicorn's "Starting gunicorn" first, as it happened
        for problem in exc.problems:
            print(f"router web: configuration error: {problem}", file=sys.stderr)
        sys.exit(2)
    warn_if_not_durable(settings.require_redis())


# Threads, not one request per process: a request waiting on Redis leaves the CPU to the
# others, and the requests a process serves at once share one round trip to Redis
# (router.batching). `--worker-class`/`--threads` on the command line override these.
worker_class = "gthread"
# Enough for the concurrent webhooks of a storm to batch (bench/ingest_load.py); each thread
# costs a stack and at most one Redis connection.
threads = 8
