"""Settings, read once from the environment (or a mapping in tests) into a frozen object.

Every malformed value stops start-up with a `ConfigError` that names the variable. Secrets may
come from `NAME_FILE` (a path whose content is the value) instead of `NAME`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast
from urllib.parse import urlsplit

from router.errors import ConfigError
from router.keys import DEFAULT_BREAKER_PREFIX, DEFAULT_ROUTER_PREFIX
from router.redis_conn import key_prefixes, redis_target, wait_replicas

LogFormat = Literal["text", "json"]

SECRET_NAMES = (
    "ROUTER_INBOUND_TOKEN",
    "ROUTER_SIGNING_SECRET",
    "ROUTER_ADMIN_TOKEN",
    "DD_API_KEY",
    "DD_APP_KEY",
    "SLACK_WEBHOOK_URL",
    "REDIS_URL",
)

# Rides out more than an hour of callback outage (about 3.7 h in all), fast at first because a
# breaker that opens late costs money, then backing off so a dead endpoint is not hammered.
DEFAULT_RETRY_SCHEDULE = "5s,30s,2m,10m,30m,1h,2h"
# Datadog gives up on a webhook request after 15 s; ours to services should be shorter still.
DEFAULT_DELIVERY_TIMEOUT_S = 10.0
# Must exceed what can pass between two refreshes of a claim (see `claim_idle_floor`), or
# healthy in-flight work gets reclaimed; a minute also bounds how long a dead worker's share waits.
DEFAULT_CLAIM_IDLE_S = 60.0
# Enough for a burst without letting one process open thousands of sockets.
DEFAULT_WORKER_CONCURRENCY = 64
# One slow endpoint may hold at most this many of a worker's slots; the rest wait, unattempted.
DEFAULT_PER_ENDPOINT_CONCURRENCY = 8
# Finished deliveries are kept this long for inspection and to drop a sender's late retries.
DEFAULT_DELIVERY_RETENTION_S = 7 * 24 * 3600.0
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_CALLBACK_KEYWORD = "circuit-breaker-callback"
# Prometheus annotation names allow no '-': the keyword's spelling with '_'.
DEFAULT_ALERTMANAGER_ANNOTATION = "circuit_breaker_callback"
DEFAULT_RECONCILE_INTERVAL_S = 60.0
# Long enough that a storm of one failure is one message plus one summary, short enough that
# the summary still arrives while someone is looking at it.
DEFAULT_NOTIFY_FOLD_WINDOW_S = 600.0
# Deliveries take seconds; one waiting five minutes means workers are gone or overwhelmed.
DEFAULT_NOTIFY_BACKLOG_AGE_S = 300.0
# A breaker that opens late costs more than one that opens with less context: enrichment gets
# this long, then the delivery goes out with what it has, marked partial.
DEFAULT_ENRICH_BUDGET_S = 3.0
# Room for scheduling and Redis round trips on top of enrichment plus the request itself.
CLAIM_IDLE_MARGIN_S = 1.0
# SNS gives up retrying an HTTP(S) delivery after at most an hour (a hard limit of its delivery
# policies), so a signed message much older than that can only be a replay.
DEFAULT_SNS_MAX_AGE_S = 3600.0
# Parked longer than this share of ROUTER_CLAIM_IDLE (its endpoint slowed down), a delivery goes
# back to Redis well before another worker could think its holder died.
SHED_PARKED_AFTER_CLAIM_IDLE = 1 / 3
# How late the worker may notice a delivery parked too long: it looks every second, between
# reads that block for up to half a second (`router.worker`; a test pins that they agree).
PARKED_SHED_LATENCY_S = 1.5

# Plain text reads best in a terminal; `json` is for a log pipeline (one object a line).
DEFAULT_LOG_FORMAT = "text"
LOG_FORMATS = ("text", "json")
DEFAULT_LOG_LEVEL = "INFO"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# Long enough for a healthy replica to confirm (milliseconds), short enough that a sender's
# request ends well inside its own timeout when no replica can.
DEFAULT_REDIS_WAIT_TIMEOUT_S = 1.0
# Shown wherever REDIS_URL is missing.
REDIS_URL_EXAMPLE = "redis://localhost:6379/0"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str, *, name: str = "duration") -> float:
    """`250ms`, `5s`, `1m`, `2h`, `1d` or a bare number of seconds, as seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(
            f"{name}: expected a duration such as 250ms, 5s, 1m, 2h or 1d, got {text!r}"
        )
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def parse_schedule(text: str, *, name: str = "ROUTER_RETRY_SCHEDULE") -> tuple[float, ...]:
    """A comma-separated list of durations: the waits before the 2nd, 3rd, ... attempt."""
    parts = [part for part in text.split(",") if part.strip()]
    if not parts:
        raise ConfigError(f"{name}: expected durations such as 5s,1m,5m,30m,2h, got {text!r}")
    return tuple(parse_duration(part, name=name) for part in parts)


def format_duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{round(seconds * 1000)}ms"


def _seconds(value: float) -> str:
    return f"{value:.3g}s"


def _read_secret(env: Mapping[str, str], name: str) -> str | None:
    file_name = f"{name}_FILE"
    if env.get(name) and env.get(file_name):
        raise ConfigError(f"{name} and {file_name} are both set; set only one")
    path = env.get(file_name)
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{file_name}: cannot read {path}: {exc.strerror}") from exc
    # Stray whitespace from a copy-paste would make a token that nothing ever matches.
    return (env.get(name) or "").strip() or None


def _split_list(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _validate_allow_prefixes(prefixes: tuple[str, ...]) -> tuple[str, ...]:
    for prefix in prefixes:
        try:
            parts = urlsplit(prefix)
            port = parts.port
            hostname = parts.hostname
        except ValueError as exc:
            raise ConfigError(f"ROUTER_CALLBACK_ALLOW: {prefix!r} is not a URL: {exc}") from exc
        if port == 0:
            raise ConfigError(f"ROUTER_CALLBACK_ALLOW: {prefix!r} has port 0")
        if parts.scheme not in ("http", "https") or not hostname:
            raise ConfigError(
                "ROUTER_CALLBACK_ALLOW: each entry must be an http(s) URL prefix with a host, "
                f"such as https://bank-charge.internal/, got {prefix!r}"
            )
        from router.allowlist import host_spelling_problem  # it imports this module

        spelling = host_spelling_problem(hostname)
        if spelling:
            raise ConfigError(f"ROUTER_CALLBACK_ALLOW: {prefix!r} would admit nothing: {spelling}")
    return prefixes


def _annotation_name(text: str | None) -> str:
    name = (text or "").strip() or DEFAULT_ALERTMANAGER_ANNOTATION
    if any(char.isspace() for char in name):
        raise ConfigError(
            "ROUTER_ALERTMANAGER_ANNOTATION: expected an annotation name such as "
            f"{DEFAULT_ALERTMANAGER_ANNOTATION}, got {text!r}"
        )
    return name


def parse_callback_allow(text: str | None) -> tuple[str, ...]:
    """ROUTER_CALLBACK_ALLOW: comma-separated http(s) URL prefixes, each checked."""
    return _validate_allow_prefixes(_split_list(text))


def parse_log_settings(env: Mapping[str, str]) -> tuple[LogFormat, str]:
    """ROUTER_LOG_FORMAT and ROUTER_LOG_LEVEL, checked; read alone by `router.gunicorn_conf`."""
    log_format = (env.get("ROUTER_LOG_FORMAT") or DEFAULT_LOG_FORMAT).strip().lower()
    if log_format not in LOG_FORMATS:
        raise ConfigError(f"ROUTER_LOG_FORMAT: expected 'text' or 'json', got {log_format!r}")
    level = (env.get("ROUTER_LOG_LEVEL") or DEFAULT_LOG_LEVEL).strip().upper()
    if level not in LOG_LEVELS:
        raise ConfigError(
            f"ROUTER_LOG_LEVEL: expected one of {', '.join(LOG_LEVELS)}, got {level!r}"
        )
    return cast(LogFormat, log_format), level


def _positive(name: str, value: float) -> float:
    if value <= 0:
        raise ConfigError(f"{name}: must be greater than zero, got {value}")
    return value


@dataclass(frozen=True)
class Settings:
    redis_url: str | None = None
    inbound_token: str | None = None
    inbound_auth_disabled: bool = False
    signing_secret: str | None = None
    callback_allow: tuple[str, ...] = ()
    retry_schedule: tuple[float, ...] = field(
        default_factory=lambda: parse_schedule(DEFAULT_RETRY_SCHEDULE)
    )
    sns_topics: tuple[str, ...] = ()
    reconcile_interval_s: float = DEFAULT_RECONCILE_INTERVAL_S
    heartbeat_url: str | None = None
    admin_token: str | None = None
    dd_api_key: str | None = None
    dd_app_key: str | None = None
    dd_site: str | None = None
    dd_api_host: str | None = None
    slack_webhook_url: str | None = None
    notify_fold_window_s: float = DEFAULT_NOTIFY_FOLD_WINDOW_S
    notify_backlog_age_s: float = DEFAULT_NOTIFY_BACKLOG_AGE_S
    key_prefix: str = DEFAULT_ROUTER_PREFIX
    # Where the services' breakers live (their `Breakers(prefix=...)`): what the dashboard shows.
    breakers_prefix: str = DEFAULT_BREAKER_PREFIX
    # Replicas that must confirm an enqueue before its 202: replication is asynchronous, so
    # without this a failover can lose a notification already acknowledged (docs/redis.md).
    redis_wait_replicas: int = 0
    redis_wait_timeout_s: float = DEFAULT_REDIS_WAIT_TIMEOUT_S
    callback_keyword: str = DEFAULT_CALLBACK_KEYWORD
    alertmanager_annotation: str = DEFAULT_ALERTMANAGER_ANNOTATION
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    delivery_timeout_s: float = DEFAULT_DELIVERY_TIMEOUT_S
    claim_idle_s: float = DEFAULT_CLAIM_IDLE_S
    worker_concurrency: int = DEFAULT_WORKER_CONCURRENCY
    per_endpoint_concurrency: int = DEFAULT_PER_ENDPOINT_CONCURRENCY
    delivery_retention_s: float = DEFAULT_DELIVERY_RETENTION_S
    enrich_budget_s: float = DEFAULT_ENRICH_BUDGET_S
    sns_max_age_s: float = DEFAULT_SNS_MAX_AGE_S
    log_format: LogFormat = "text"
    log_level: str = DEFAULT_LOG_LEVEL

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Parse every variable; malformed values raise ConfigError naming the variable."""

        def duration(name: str, default: float) -> float:
            text = env.get(name)
            return _positive(name, parse_duration(text, name=name)) if text else default

        def integer(name: str, default: int) -> int:
            text = env.get(name)
            if not text:
                return default
            try:
                value = int(text)
            except ValueError as exc:
                raise ConfigError(f"{name}: expected a whole number, got {text!r}") from exc
            return int(_positive(name, value))

        auth_mode = (env.get("ROUTER_INBOUND_AUTH") or "token").strip().lower()
        if auth_mode not in ("token", "none"):
            raise ConfigError(f"ROUTER_INBOUND_AUTH: expected 'token' or 'none', got {auth_mode!r}")

        log_format, log_level = parse_log_settings(env)
        redis_url = _read_secret(env, "REDIS_URL")
        key_prefix, breakers_prefix = key_prefixes(
            redis_url,
            env.get("ROUTER_KEY_PREFIX") or DEFAULT_ROUTER_PREFIX,
            env.get("BREAKERS_PREFIX") or DEFAULT_BREAKER_PREFIX,
        )
        settings = cls(
            redis_url=redis_url,
            inbound_token=_read_secret(env, "ROUTER_INBOUND_TOKEN"),
            inbound_auth_disabled=auth_mode == "none",
            signing_secret=_read_secret(env, "ROUTER_SIGNING_SECRET"),
            callback_allow=parse_callback_allow(env.get("ROUTER_CALLBACK_ALLOW")),
            retry_schedule=parse_schedule(
                env.get("ROUTER_RETRY_SCHEDULE") or DEFAULT_RETRY_SCHEDULE
            ),
            sns_topics=_split_list(env.get("ROUTER_SNS_TOPICS")),
            reconcile_interval_s=duration(
                "ROUTER_RECONCILE_INTERVAL", DEFAULT_RECONCILE_INTERVAL_S
            ),
            heartbeat_url=env.get("ROUTER_HEARTBEAT_URL") or None,
            admin_token=_read_secret(env, "ROUTER_ADMIN_TOKEN"),
            dd_api_key=_read_secret(env, "DD_API_KEY"),
            dd_app_key=_read_secret(env, "DD_APP_KEY"),
            dd_site=env.get("DD_SITE") or None,
            dd_api_host=env.get("DD_API_HOST") or None,
            slack_webhook_url=_read_secret(env, "SLACK_WEBHOOK_URL"),
            notify_fold_window_s=duration(
                "ROUTER_NOTIFY_FOLD_WINDOW", DEFAULT_NOTIFY_FOLD_WINDOW_S
            ),
            notify_backlog_age_s=duration(
                "ROUTER_NOTIFY_BACKLOG_AGE", DEFAULT_NOTIFY_BACKLOG_AGE_S
            ),
            key_prefix=key_prefix,
            breakers_prefix=breakers_prefix,
            redis_wait_replicas=wait_replicas(env.get("ROUTER_REDIS_WAIT_REPLICAS")),
            redis_wait_timeout_s=duration(
                "ROUTER_REDIS_WAIT_TIMEOUT", DEFAULT_REDIS_WAIT_TIMEOUT_S
            ),
            callback_keyword=env.get("ROUTER_CALLBACK_KEYWORD") or DEFAULT_CALLBACK_KEYWORD,
            alertmanager_annotation=_annotation_name(env.get("ROUTER_ALERTMANAGER_ANNOTATION")),
            max_body_bytes=integer("ROUTER_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
            delivery_timeout_s=duration("ROUTER_DELIVERY_TIMEOUT", DEFAULT_DELIVERY_TIMEOUT_S),
            claim_idle_s=duration("ROUTER_CLAIM_IDLE", DEFAULT_CLAIM_IDLE_S),
            worker_concurrency=integer("ROUTER_WORKER_CONCURRENCY", DEFAULT_WORKER_CONCURRENCY),
            per_endpoint_concurrency=integer(
                "ROUTER_PER_ENDPOINT_CONCURRENCY", DEFAULT_PER_ENDPOINT_CONCURRENCY
            ),
            delivery_retention_s=duration(
                "ROUTER_DELIVERY_RETENTION", DEFAULT_DELIVERY_RETENTION_S
            ),
            enrich_budget_s=duration("ROUTER_ENRICH_BUDGET", DEFAULT_ENRICH_BUDGET_S),
            sns_max_age_s=duration("ROUTER_SNS_MAX_AGE", DEFAULT_SNS_MAX_AGE_S),
            log_format=log_format,
            log_level=log_level,
        )
        if settings.signing_secret is not None:
            _check_signing_secret(settings.signing_secret)
        return settings

    # Each process asks for what it needs, so a web process does not demand worker secrets.
    def require_redis(self) -> str:
        _raise_any(self.redis_problems())
        assert self.redis_url is not None
        return self.redis_url

    def require_web(self) -> None:
        _raise_any(self.web_problems())

    def web_problems(self) -> list[str]:
        problems = self.redis_problems()
        if not self.inbound_token and not self.inbound_auth_disabled:
            problems.append(
                "ROUTER_INBOUND_TOKEN is not set: set a long random token such as the output of "
                "`openssl rand -hex 32` (Datadog sends it as a header or in the webhook URL), or "
                "ROUTER_INBOUND_AUTH=none to accept unauthenticated notifications on purpose"
            )
        # A replayed SNS message is recognised by its delivery records until they expire, and
        # refused by its age after that; a gap between the two would let a replay through.
        if self.sns_max_age_s >= self.delivery_retention_s:
            problems.append(
                f"ROUTER_SNS_MAX_AGE ({format_duration(self.sns_max_age_s)}) must be shorter "
                f"than ROUTER_DELIVERY_RETENTION ({format_duration(self.delivery_retention_s)}), "
                "or a replayed SNS message could be delivered again once its records expire"
            )
        return problems

    def require_worker(self) -> str:
        _raise_any(self.worker_problems())
        assert self.signing_secret is not None  # worker_problems() names it otherwise
        return self.signing_secret

    def worker_problems(self) -> list[str]:
        problems = self.redis_problems()
        if not self.signing_secret:
            problems.append(
                "ROUTER_SIGNING_SECRET is not set: services verify callbacks with it; "
                "generate one with `router secret` (it looks like whsec_MfKQ9r8GKYqrTwjUPD8...)"
            )
        if not self.callback_allow:
            problems.append(
                "ROUTER_CALLBACK_ALLOW is not set: list the URL prefixes the router may call, "
                "e.g. https://bank-charge.internal/breaker/"
            )
        floor = self.claim_idle_floor()
        if self.claim_idle_s <= floor:
            problems.append(
                f"ROUTER_CLAIM_IDLE ({format_duration(self.claim_idle_s)}) must exceed "
                f"{_seconds(floor)}: once started, an attempt may take ROUTER_DELIVERY_TIMEOUT "
                f"({format_duration(self.delivery_timeout_s)}) plus "
                f"{format_duration(CLAIM_IDLE_MARGIN_S)}; before it starts, a delivery may "
                f"spend ROUTER_ENRICH_BUDGET ({format_duration(self.enrich_budget_s)}) being "
                "enriched and a third of ROUTER_CLAIM_IDLE waiting for its endpoint. Any "
                "shorter and deliveries still in flight would be taken over and sent twice"
            )
        return problems

    def redis_problems(self) -> list[str]:
        if self.redis_url:
            return []
        return [
            f"REDIS_URL is not set: point it at the Redis the router uses, e.g. {REDIS_URL_EXAMPLE}"
        ]

    def claim_idle_floor(self) -> float:
        """The shortest safe ROUTER_CLAIM_IDLE: the longest a healthy worker leaves a claim
        unrefreshed. A claim is refreshed when its attempt starts, so two stretches count:
        claim to attempt (enrichment, then parking, which is itself a share of the claim idle
        time) and the attempt itself (a deadline, connect to last byte)."""
        before_attempt = (self.enrich_budget_s + PARKED_SHED_LATENCY_S + CLAIM_IDLE_MARGIN_S) / (
            1 - SHED_PARKED_AFTER_CLAIM_IDLE
        )
        during_attempt = self.delivery_timeout_s + CLAIM_IDLE_MARGIN_S
        return max(before_attempt, during_attempt)


def _check_signing_secret(secret: str) -> None:
    import base64
    import binascii

    if not secret.startswith("whsec_"):
        raise ConfigError(
            "ROUTER_SIGNING_SECRET: expected a Standard Webhooks secret starting with 'whsec_' "
            "(generate one with `router secret`)"
        )
    try:
        raw = base64.b64decode(secret[len("whsec_") :] + "==", validate=False)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError("ROUTER_SIGNING_SECRET: the part after 'whsec_' is not base64") from exc
    if len(raw) < 24:
        raise ConfigError(
            "ROUTER_SIGNING_SECRET: the secret must hold at least 24 random bytes, "
            f"it has {len(raw)}"
        )


def check_redis_url(url: str) -> None:
    """A ConfigError naming REDIS_URL, with good examples, when `url` is not a Redis URL."""
    redis_target(url)


def _raise_any(problems: list[str]) -> None:
    if problems:
        raise ConfigError(*problems)


Role = Literal["redis", "web", "worker"]
_NAMED = re.compile(r"^([A-Z][A-Z0-9_]*[A-Z0-9])\b")


def _setting_named(problem: str) -> str | None:
    """The variable a problem is about: every message starts with its name."""
    match = _NAMED.match(problem)
    if match is None:
        return None
    name = match.group(1)
    return name.removesuffix("_FILE") if name.removesuffix("_FILE") in SECRET_NAMES else name


def settings_for(env: Mapping[str, str], *roles: Role) -> Settings:
    """Settings for a process with `roles`, or a ConfigError listing every problem at once.

    Parsing stops at the first malformed value, so each one found is set aside (the default
    stands in) and the rest parsed again; then each role's requirements are checked, except
    for variables already reported as malformed.
    """
    remaining = dict(env)
    problems: list[str] = []
    reported: set[str] = set()
    while True:
        try:
            settings = Settings.from_env(remaining)
            break
        except ConfigError as exc:
            problems.extend(exc.problems)
            names = {_setting_named(problem) for problem in exc.problems}
            dropped = {n for n in names if n} & {key.removesuffix("_FILE") for key in remaining}
            if not dropped:  # nothing to set aside: report what was found
                raise ConfigError(*problems) from None
            reported |= dropped
            for name in dropped:
                remaining.pop(name, None)
                remaining.pop(f"{name}_FILE", None)
    checks = {
        "redis": settings.redis_problems,
        "web": settings.web_problems,
        "worker": settings.worker_problems,
    }
    for role in roles:
        for problem in checks[role]():
            if problem not in problems and _setting_named(problem) not in reported:
                problems.append(problem)
    _raise_any(problems)
    return settings
