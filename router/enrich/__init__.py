"""Enrichment: the monitor's name, tags and every group's state (and the event's tags) from
the Datadog API, read once per short window for everyone, within each delivery's budget.

The worker builds one `Enricher` per process and calls `enrich(notification, budget_s=...)`
from its threads; `health()` feeds /readyz. See docs/datadog.md.
"""

from router.enrich.api import (
    DatadogApiError,
    DatadogAuthError,
    DatadogNotFound,
    DatadogProtocolError,
    DatadogRateLimited,
    DatadogUnavailable,
    RateLimitInfo,
)
from router.enrich.engine import (
    DEFAULT_BUDGET_S,
    EVENT_WAIT_BUDGET_S,
    KEYS_MISSING,
    MONITOR_CACHE_TTL_S,
    Enricher,
    MonitorRead,
    recommended_budget,
)
from router.enrich.snapshot import EventSnapshot, MonitorSnapshot, group_tags

__all__ = [
    "DEFAULT_BUDGET_S",
    "EVENT_WAIT_BUDGET_S",
    "KEYS_MISSING",
    "MONITOR_CACHE_TTL_S",
    "DatadogApiError",
    "DatadogAuthError",
    "DatadogNotFound",
    "DatadogProtocolError",
    "DatadogRateLimited",
    "DatadogUnavailable",
    "Enricher",
    "EventSnapshot",
    "MonitorRead",
    "MonitorSnapshot",
    "RateLimitInfo",
    "group_tags",
    "recommended_budget",
]
