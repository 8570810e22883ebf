"""A stub Datadog API for tests, benchmarks and `router dev`: recorded shapes, scripted faults.

Run it with `python -m router.datadog_stub --port N`, or in-process with `StubServer`; point
the router at it with `DD_API_HOST=http://127.0.0.1:N`.
"""

from router.datadog_stub.app import create_app
from router.datadog_stub.harness import StubClient, StubControlError, StubServer
from router.datadog_stub.state import (
    RECORDED_EVENT_ID,
    RECORDED_MONITOR_ID,
    StubSpecError,
    StubState,
    load_fixture,
)

__all__ = [
    "RECORDED_EVENT_ID",
    "RECORDED_MONITOR_ID",
    "StubClient",
    "StubControlError",
    "StubServer",
    "StubSpecError",
    "StubState",
    "create_app",
    "load_fixture",
]
