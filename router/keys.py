"""Every Redis key name the project uses, in one place and one format: `<prefix>:<kind>[:<id>]`.

The prefix lets several routers (or test runs) share one Redis without seeing each other.
This module is pure Python so that `router.client` can import it with only `redis` installed.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_ROUTER_PREFIX = "br"


@dataclass(frozen=True)
class RouterKeys:
    """Keys of the delivery queue."""

    prefix: str = DEFAULT_ROUTER_PREFIX

    @property
    def stream(self) -> str:
        """Stream of delivery ids ready to attempt; consumed by the `workers` group."""
        return f"{self.prefix}:deliveries"

    @property
    def group(self) -> str:
        return "workers"

    @property
    def delayed(self) -> str:
        """Sorted set of delivery ids waiting for a retry, scored by due time in ms."""
        return f"{self.prefix}:delayed"

    @property
    def dead(self) -> str:
        """Dead-letter stream (never trimmed, no TTL): one entry per dead delivery."""
        return f"{self.prefix}:dead"

    @property
    def stats(self) -> str:
        """Hash of cluster-wide counters, exported on /metrics."""
        return f"{self.prefix}:stats"

    @property
    def worker_heartbeats(self) -> str:
        """Hash of worker name -> last heartbeat ms."""
        return f"{self.prefix}:workers"

    def delivery(self, delivery_id: str) -> str:
        """Hash holding one delivery: the notification, callback URL, state and attempts."""
        return f"{self.prefix}:delivery:{delivery_id}"

    @property
    def delivery_pattern(self) -> str:
        return f"{self.prefix}:delivery:*"
