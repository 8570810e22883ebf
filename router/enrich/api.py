"""The one boundary to the Datadog API: the official client, configured, and its errors translated.

Everything the client or urllib3 can raise becomes a `DatadogApiError` subclass here, so the
engine decides on *kinds* of failure (retry later, never retry, wait for a reset) and never on
client internals. Rate-limit headers are read from every answer, successful or not.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import urllib3
from datadog_api_client import ApiClient, Configuration, rest
from datadog_api_client.exceptions import ApiException, OpenApiException
from datadog_api_client.v1.api.events_api import EventsApi
from datadog_api_client.v1.api.monitors_api import MonitorsApi

from router.config import Settings
from router.enrich.snapshot import is_id
from router.errors import ConfigError, RouterError

# Operation names as Datadog's OpenAPI spec has them: in logs, health and problem lines.
GET_MONITOR = "GetMonitor"
GET_EVENT = "GetEvent"


class DatadogApiError(RouterError):
    """A Datadog API call failed; the subclass says what a caller can do about it."""

    def __init__(
        self,
        message: str,
        *,
        operation: str,
        status: int | None = None,
        rate_limit: RateLimitInfo | None = None,
    ) -> None:
        super().__init__(message)
        self.operation = operation
        self.status = status
        self.rate_limit = rate_limit


class DatadogAuthError(DatadogApiError):
    """401/403: a wrong key or an application key without the scope; retrying cannot help."""


class DatadogNotFound(DatadogApiError):
    """404: no such monitor, or an event Datadog has not indexed yet (10-20 s after an alert)."""


class DatadogRateLimited(DatadogApiError):
    """429: calls of this kind may resume after `reset_s` seconds."""

    def __init__(self, message: str, *, operation: str, reset_s: float, **kwargs: Any) -> None:
        super().__init__(message, operation=operation, status=429, **kwargs)
        self.reset_s = reset_s


class DatadogUnavailable(DatadogApiError):
    """5xx, 408, a timeout or no connection: Datadog may answer if asked again later."""


class DatadogProtocolError(DatadogApiError):
    """Another 4xx, or an answer that is not what the API promises; retrying cannot help."""


# When a 429 carries no usable X-Ratelimit-Reset: Datadog's windows are 10 or 60 s; try again soon.
# Also the least a 429 pauses: `Reset: 0` (under a second left, rounded down) is no reason to
# ask again at once, into the same used-up window.
DEFAULT_RESET_S = 1.0


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


@dataclass(frozen=True)
class RateLimitInfo:
    """Datadog's `X-RateLimit-*` headers on one answer; `reset_s`: seconds to the next window."""

    name: str | None
    limit: int | None
    period_s: int | None
    remaining: int | None
    reset_s: int | None

    @classmethod
    def from_headers(cls, headers: Mapping[str, Any] | None) -> RateLimitInfo | None:
        if not headers:
            return None
        lowered = {str(key).lower(): str(value) for key, value in headers.items()}
        if not any(key.startswith("x-ratelimit-") for key in lowered):
            return None
        return cls(
            name=lowered.get("x-ratelimit-name"),
            limit=_int(lowered.get("x-ratelimit-limit")),
            period_s=_int(lowered.get("x-ratelimit-period")),
            remaining=_int(lowered.get("x-ratelimit-remaining")),
            reset_s=_int(lowered.get("x-ratelimit-reset")),
        )


@dataclass(frozen=True)
class ApiAnswer:
    body: dict[str, Any]
    rate_limit: RateLimitInfo | None


def _error_text(body: Any) -> str:
    """Datadog's `{"errors": ["..."]}` as one line; anything else shortened."""
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        return "; ".join(str(error) for error in body["errors"])[:200]
    return str(body or "")[:200]


def _translate(operation: str, exc: ApiException) -> DatadogApiError:
    status = int(exc.status or 0)
    rate_limit = RateLimitInfo.from_headers(exc.headers)
    message = f"{operation} answered {status} {_error_text(exc.body) or exc.reason}"
    kwargs: dict[str, Any] = {"operation": operation, "rate_limit": rate_limit}
    if status in (401, 403):
        return DatadogAuthError(message, status=status, **kwargs)
    if status == 404:
        return DatadogNotFound(message, status=status, **kwargs)
    if status == 429:
        reset = rate_limit.reset_s if rate_limit and rate_limit.reset_s is not None else None
        return DatadogRateLimited(
            message,
            reset_s=max(DEFAULT_RESET_S, float(reset)) if reset is not None else DEFAULT_RESET_S,
            **kwargs,
        )
    # status 0: the client wraps TLS failures that way.
    if status in (0, 408) or status >= 500:
        return DatadogUnavailable(message, status=status or None, **kwargs)
    return DatadogProtocolError(message, status=status, **kwargs)


def build_configuration(settings: Settings, *, request_timeout_s: float) -> Configuration:
    """The client's configuration: keys, base URL (DD_API_HOST or DD_SITE), no own retries."""
    if settings.dd_api_host:
        parts = urlsplit(settings.dd_api_host)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(
                "DD_API_HOST: expected a base URL such as https://api.datadoghq.eu or "
                f"http://127.0.0.1:8787, got {settings.dd_api_host!r}"
            )
        configuration = Configuration(host=settings.dd_api_host.rstrip("/"))  # type: ignore[no-untyped-call]
    else:
        configuration = Configuration()  # type: ignore[no-untyped-call]
        # The client reads DD_SITE from os.environ itself; Settings is the only source we honour.
        configuration.server_variables = {"site": settings.dd_site} if settings.dd_site else {}
        try:
            configuration.host  # noqa: B018 - validates the site against the client's list
        except ValueError as exc:
            raise ConfigError(f"DD_SITE: {exc}") from exc
    configuration.api_key = {
        "apiKeyAuth": settings.dd_api_key or "",
        "appKeyAuth": settings.dd_app_key or "",
    }
    configuration.request_timeout = request_timeout_s
    # (data, status, headers): the headers carry the rate-limit state we must read.
    configuration.return_http_data_only = False
    # A monitor-alert event's `payload` is a JSON object where the spec says string; with type
    # checks on, the client raises ApiTypeError on it (reference §5.5). We validate ourselves.
    configuration.check_return_type = False
    # No retries inside the client or urllib3: a dead API costs one attempt, and the engine
    # decides about waiting (rate-limit resets, cooldowns) against each delivery's budget.
    configuration.enable_retry = False
    configuration.retry_policy = urllib3.util.Retry(total=False)
    return configuration


class _PooledApiClient(ApiClient):
    """An ApiClient whose pool keeps `max_connections` per host (the client's default is 4:
    a fifth concurrent read would open and then discard a connection, with a warning)."""

    def __init__(self, configuration: Configuration, *, max_connections: int) -> None:
        self._max_connections = max_connections
        super().__init__(configuration)

    def _build_rest_client(self) -> Any:
        return rest.RESTClientObject(self.configuration, maxsize=self._max_connections)  # type: ignore[no-untyped-call]


class DatadogApi:
    """GetMonitor and GetEvent through the official client; thread-safe."""

    def __init__(
        self, settings: Settings, *, request_timeout_s: float, max_connections: int
    ) -> None:
        configuration = build_configuration(settings, request_timeout_s=request_timeout_s)
        self.host: str = configuration.host
        self._client = _PooledApiClient(configuration, max_connections=max_connections)
        self._monitors = MonitorsApi(self._client)  # type: ignore[no-untyped-call]
        self._events = EventsApi(self._client)  # type: ignore[no-untyped-call]

    def get_monitor(self, monitor_id: str) -> ApiAnswer:
        """The monitor with every group's state (`group_states=all`)."""
        answer = self._call(
            GET_MONITOR, lambda: self._monitors.get_monitor(int(monitor_id), group_states="all")
        )
        # The client turns a JSON array into a Monitor positionally; a body without an id is
        # no monitor, whatever it holds.
        monitor_id_in_body = answer.body.get("id")
        if isinstance(monitor_id_in_body, bool) or not (
            isinstance(monitor_id_in_body, int)
            or (isinstance(monitor_id_in_body, str) and is_id(monitor_id_in_body))
        ):
            raise DatadogProtocolError(
                f"{GET_MONITOR}: unreadable answer: not a monitor (no id)",
                operation=GET_MONITOR,
                rate_limit=answer.rate_limit,
            )
        return answer

    def get_event(self, event_id: str) -> ApiAnswer:
        answer = self._call(GET_EVENT, lambda: self._events.get_event(int(event_id)))
        if not isinstance(answer.body.get("event"), dict):
            raise DatadogProtocolError(
                f"{GET_EVENT}: unreadable answer: not an event (no event object)",
                operation=GET_EVENT,
                rate_limit=answer.rate_limit,
            )
        return answer

    def close(self) -> None:
        self._client.close()

    def _call(self, operation: str, call: Callable[[], Any]) -> ApiAnswer:
        try:
            result: Any = call()
        except ApiException as exc:
            raise _translate(operation, exc) from exc
        except urllib3.exceptions.HTTPError as exc:
            # Refused connections, timeouts, resets: urllib3 raises these unwrapped.
            raise DatadogUnavailable(
                f"{operation}: no answer from {self.host}: {type(exc).__name__}: {exc}",
                operation=operation,
            ) from exc
        except OSError as exc:
            raise DatadogUnavailable(
                f"{operation}: no answer from {self.host}: {exc}", operation=operation
            ) from exc
        except OpenApiException as exc:
            raise DatadogProtocolError(
                f"{operation}: unreadable answer: {exc}", operation=operation
            ) from exc
        except Exception as exc:
            # The client deserialises the body into its models and raises whatever they raise
            # on a body they do not expect (TypeError for missing required fields, ...).
            raise DatadogProtocolError(
                f"{operation}: unreadable answer: {type(exc).__name__}: {str(exc)[:200]}",
                operation=operation,
            ) from exc
        try:
            data, _status, headers = result
            rate_limit = RateLimitInfo.from_headers(headers)
            body = data.to_dict() if hasattr(data, "to_dict") else data
        except Exception as exc:
            raise DatadogProtocolError(
                f"{operation}: unreadable answer: {type(exc).__name__}: {str(exc)[:200]}",
                operation=operation,
            ) from exc
        if not isinstance(body, dict):
            raise DatadogProtocolError(
                f"{operation}: expected a JSON object, got {type(body).__name__}",
                operation=operation,
                rate_limit=rate_limit,
            )
        return ApiAnswer(body, rate_limit)


def exhausted_for(info: RateLimitInfo | None) -> float | None:
    """Seconds until the window resets when an answer says no calls remain in it, else None."""
    if info is None or info.remaining is None or info.remaining > 0:
        return None
    return float(info.reset_s) if info.reset_s is not None else DEFAULT_RESET_S
