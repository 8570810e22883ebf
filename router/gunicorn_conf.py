"""gunicorn settings for the router web (`gunicorn -c python:router.gunicorn_conf ...`).

gunicorn owns logging in its processes: this hands it the router's handler and format
(`ROUTER_LOG_FORMAT`, `ROUTER_LOG_LEVEL`), so its own lines and the app's come out alike.
"""

from __future__ import annotations

import os

from router.config import parse_log_settings
from router.logs import dict_config

logconfig_dict = dict_config(*parse_log_settings(os.environ))

# Threads, not one request per process: a request waiting on Redis leaves the CPU to the
# others, and the requests a process serves at once share one round trip to Redis
# (router.batching). `--worker-class`/`--threads` on the command line override these.
worker_class = "gthread"
# Enough for the concurrent webhooks of a storm to batch (bench/ingest_load.py); each thread
# costs a stack and at most one Redis connection.
threads = 8
