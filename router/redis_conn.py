"""Redis connections with bounded waits: a stalled Redis must never hang a request or worker."""

from __future__ import annotations

import redis

# A sender retries on our 503, so answering fast beats waiting long on a sick Redis.
CONNECT_TIMEOUT_S = 2.0
# Longer than the worker's blocking read (see router.worker.READ_BLOCK_MS).
SOCKET_TIMEOUT_S = 5.0


def connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=SOCKET_TIMEOUT_S,
        health_check_interval=30,
        # Callers decide about retries (tenacity on enqueue, the worker loop's backoff).
        retry_on_timeout=False,
    )
