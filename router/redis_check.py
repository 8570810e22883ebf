"""The start-up check of the Redis the router answers `202` on: will it keep the work?

The router acknowledges a notification once Redis holds it, so a Redis that forgets on restart
(`appendonly no`) or evicts under memory pressure (any `maxmemory-policy` but `noeviction`)
loses work already acknowledged. Web and worker warn about both at start; they still start,
because a Redis snapshotting on purpose (or a test) is a choice, not a mistake. Managed Redis
services often refuse CONFIG: then the warning says the check could not be made.
"""

from __future__ import annotations

import logging
from typing import cast

import redis

from router.redis_conn import connect

log = logging.getLogger(__name__)

# Only this policy never drops a key: every other one may evict queued deliveries (the
# volatile-* ones too, since delivery records carry the retention window as a TTL).
SAFE_EVICTION_POLICY = "noeviction"
# Every warning's first words, so a reader (or `router dev`) can pick them out.
WARNING_MARK = "start-up check: "


def durability_warnings(client: redis.Redis) -> list[str]:
    """What about this Redis could lose acknowledged work, one sentence each."""
    try:
        appendonly = cast(dict[str, str], client.config_get("appendonly")).get("appendonly")
        policy = cast(dict[str, str], client.config_get("maxmemory-policy")).get("maxmemory-policy")
    except redis.ResponseError as exc:
        return [
            f"could not check Redis persistence and eviction (CONFIG GET refused: {exc}); make "
            "sure it runs with appendonly yes and maxmemory-policy noeviction, or a restart or "
            "a full memory loses notifications already answered 202"
        ]
    except redis.RedisError as exc:
        return [f"could not check Redis persistence and eviction (Redis unavailable: {exc})"]
    warnings = []
    if appendonly != "yes":
        warnings.append(
            f"Redis runs with appendonly {appendonly or 'unknown'}: a restart loses every queued "
            "delivery and dead letter the router answered 202 for; set appendonly yes "
            "(appendfsync everysec, or always to lose nothing)"
        )
    if policy != SAFE_EVICTION_POLICY:
        warnings.append(
            f"Redis runs with maxmemory-policy {policy or 'unknown'}: when it fills up it may "
            "evict queued deliveries, dead letters and breakers; set maxmemory-policy "
            "noeviction (the router then answers 503 and senders retry)"
        )
    return warnings


def warn_if_not_durable(url: str) -> None:
    """Log each warning about the Redis at `url`; a start-up check never stops a start."""
    try:
        warnings = durability_warnings(connect(url))
    except Exception as exc:  # e.g. a Cluster's first contact failing: the process goes on
        warnings = [f"could not check Redis persistence and eviction: {exc}"]
    for warning in warnings:
        log.warning("%s%s", WARNING_MARK, warning)
