"""Every Redis key name the project uses, in one place and one format: `<prefix>:<kind>[:<id>]`.

The prefix lets several routers (or test runs) share one Redis without seeing each other.
The breaker keys, which services write through the client, are defined in `breaker_client.keys`.
"""

from __future__ import annotations

from dataclasses import dataclass

from breaker_client.keys import DEFAULT_BREAKER_PREFIX, BreakerKeys

__all__ = ["DEFAULT_BREAKER_PREFIX", "DEFAULT_ROUTER_PREFIX", "BreakerKeys", "RouterKeys"]

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
    def notifications_received(self) -> str:
        """Hash of `<source>|<outcome>|<reason>` -> count of inbound notifications, for /metrics."""
        return f"{self.prefix}:metrics:notifications"

    @property
    def attempt_seconds(self) -> str:
        """Hash of `<outcome>|<le>` and `<outcome>|sum`: the attempt-duration histogram (each
        attempt counted once, under the smallest bound it fits)."""
        return f"{self.prefix}:metrics:attempt-seconds"

    @property
    def datadog_calls(self) -> str:
        """Hash of `calls|<op>`, `errors|<op>|<kind>`, `waits|<op>`, `wait_seconds|<op>`."""
        return f"{self.prefix}:metrics:datadog"

    @property
    def worker_heartbeats(self) -> str:
        """Hash of worker name -> last heartbeat ms."""
        return f"{self.prefix}:workers"

    def delivery(self, delivery_id: str) -> str:
        """Hash holding one delivery: the notification, callback URL, state and attempts."""
        return f"{self.prefix}:delivery:{delivery_id}"

    @property
    def recent_deliveries(self) -> str:
        """Sorted set of delivery id -> ms of its latest change, capped: the dashboard's list."""
        return f"{self.prefix}:recent-deliveries"

    @property
    def audit(self) -> str:
        """Capped stream of what people did from the dashboard or API: who, what, why, when."""
        return f"{self.prefix}:audit"

    @property
    def delivery_pattern(self) -> str:
        return f"{self.prefix}:delivery:*"

    @property
    def enrichment_health(self) -> str:
        """Hash of worker name -> its Datadog API health as JSON, merged on /readyz."""
        return f"{self.prefix}:enrichment-health"

    def dd_monitor(self, monitor_id: str) -> str:
        """String: a Datadog monitor snapshot as JSON, shared by workers for a few seconds."""
        return f"{self.prefix}:dd-monitor:{monitor_id}"

    def dd_monitor_read(self, monitor_id: str) -> str:
        """String: token of the process reading this monitor from Datadog right now (a lease)."""
        return f"{self.prefix}:dd-monitor-read:{monitor_id}"

    @property
    def reconcile_targets(self) -> str:
        """Hash of `<monitor id> <callback URL>` -> JSON: what that callback was last told."""
        return f"{self.prefix}:reconcile:targets"

    @property
    def reconcile_leader(self) -> str:
        """String with a TTL: the name of the worker that runs the reconciler (a lease)."""
        return f"{self.prefix}:reconcile:leader"

    @property
    def reconcile_status(self) -> str:
        """Hash: last cycle (`last_success_ms`, `last_run_ms`, `last_error`) and per-monitor
        outcomes (`monitor:<id>` -> JSON), for /readyz, /metrics and the dashboard."""
        return f"{self.prefix}:reconcile:status"

    def notify_fold(self, fingerprint: str) -> str:
        """Hash: a notification fold window (first/last time, count), shared by all workers."""
        return f"{self.prefix}:notify:fold:{fingerprint}"

    @property
    def notify_folds(self) -> str:
        """Sorted set of open fold fingerprints scored by when their window ends."""
        return f"{self.prefix}:notify:folds"
