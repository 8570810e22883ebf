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


DEFAULT_BREAKER_PREFIX = "breakers"


@dataclass(frozen=True)
class BreakerKeys:
    """Keys of the breaker flags that `router.client` reads and writes.

    One breaker is a breaker name plus an optional key (`bank-charge`, `bank-charge` + `0001`);
    its *member* string is `<name>` or `<name>:<key>`. Breaker names never contain `:`, so the
    member splits back unambiguously while a key may contain anything.
    """

    prefix: str = DEFAULT_BREAKER_PREFIX

    @property
    def index(self) -> str:
        """Set of every breaker member ever written: what a full resync and `list()` read."""
        return f"{self.prefix}:index"

    @property
    def channel(self) -> str:
        """Pub/sub channel: each change publishes the member whose record changed."""
        return f"{self.prefix}:changes"

    # The next three sit beside `index`: the write scripts derive them from its name.
    @property
    def revision(self) -> str:
        """Counter: the revision of the newest breaker write (every write takes the next)."""
        return f"{self.prefix}:revision"

    @property
    def revisions(self) -> str:
        """Sorted set of member -> revision of its last write (or prune): what resyncs read."""
        return f"{self.prefix}:revisions"

    @property
    def written(self) -> str:
        """Sorted set of member -> ms of its last write (or last prune check): what prunes read."""
        return f"{self.prefix}:written"

    def member_keys(self, member: str) -> tuple[str, ...]:
        """Every key that belongs to one breaker; pruning a breaker deletes exactly these."""
        return (self.record(member), self.history(member), self.groups(member))

    def record(self, member: str) -> str:
        """Hash holding one breaker's state, override and version (see router.client.store)."""
        return f"{self.prefix}:state:{member}"

    def history(self, member: str) -> str:
        """Capped stream of one breaker's changes, oldest first."""
        return f"{self.prefix}:history:{member}"

    def groups(self, member: str) -> str:
        """Hash of monitor group -> `<version> <status>`: what drives a keyless breaker."""
        return f"{self.prefix}:groups:{member}"

    def delivery_seen(self, webhook_id: str) -> str:
        """Marker (with a TTL) that a callback delivery was already handled."""
        return f"{self.prefix}:seen:{webhook_id}"

    @property
    def record_prefix(self) -> str:
        """`record(member)` without the member, for the Lua script that derives key names."""
        return self.record("")

    @property
    def history_prefix(self) -> str:
        return self.history("")

    @staticmethod
    def member(name: str, key: str | None) -> str:
        return name if key is None else f"{name}:{key}"

    @staticmethod
    def split_member(member: str) -> tuple[str, str | None]:
        name, sep, key = member.partition(":")
        return name, (key if sep else None)
