"""One exception tree for the router; lower-level errors are translated at one boundary."""

from __future__ import annotations


class RouterError(Exception):
    """Base of every error the router raises on purpose."""


class ConfigError(RouterError):
    """Settings missing or malformed: one message per problem, each naming its variable."""

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class PayloadError(RouterError):
    """A sender's payload cannot be accepted; `status` is the HTTP answer (400, 413, 415, 422)."""

    def __init__(self, message: str, *, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


class AuthError(RouterError):
    """Missing or wrong credentials or signature (401)."""


class ForbiddenError(RouterError):
    """Authenticated but not allowed, e.g. an SNS topic not in ROUTER_SNS_TOPICS (403)."""


class QueueUnavailable(RouterError):
    """Redis could not be reached or refused the write; senders should retry (503)."""


class DeliveryError(RouterError):
    """One callback attempt failed; `permanent` means retrying cannot help."""

    def __init__(
        self,
        message: str,
        *,
        permanent: bool,
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.status = status
        self.retry_after_s = retry_after_s
