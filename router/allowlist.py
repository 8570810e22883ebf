"""`ROUTER_CALLBACK_ALLOW`: the only URLs the router will ever call.

A plain string prefix would let `https://svc.internal` admit `https://svc.internal.evil.com`,
so entries are compared by parts: same scheme, host and port, and a path under the entry's.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import SplitResult, unquote, urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _port(parts: SplitResult) -> int | None:
    try:
        port = parts.port
    except ValueError:
        return None
    if port is None:
        return _DEFAULT_PORTS.get(parts.scheme.lower())
    return port if port > 0 else None


def _has_dot_segments(path: str) -> bool:
    # HTTP clients resolve `/breaker/../admin` to `/admin`: such a path could escape the prefix.
    return any(segment in (".", "..") for segment in unquote(path).split("/"))


def _path_under(path: str, prefix_path: str) -> bool:
    if not prefix_path or prefix_path == "/":
        return True
    if prefix_path.endswith("/"):
        return path.startswith(prefix_path)
    return path == prefix_path or path.startswith(prefix_path + "/")


@dataclass(frozen=True)
class CallbackAllowList:
    prefixes: tuple[str, ...]

    def allows(self, url: str) -> bool:
        try:
            parts = urlsplit(url)
            hostname = parts.hostname
        except ValueError:  # e.g. an unbalanced IPv6 bracket
            return False
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not hostname:
            return False
        port = _port(parts)
        if port is None or _has_dot_segments(parts.path):
            return False
        for prefix in self.prefixes:
            allowed = urlsplit(prefix)
            if (
                allowed.scheme.lower() == scheme
                and allowed.hostname == hostname
                and _port(allowed) == port
                and _path_under(parts.path or "/", allowed.path)
            ):
                return True
        return False

    def refusal(self, url: str) -> str:
        """Why a URL is refused, for the dead-letter reason and the 202 answer."""
        return (
            f"callback URL {url} is not under any ROUTER_CALLBACK_ALLOW prefix "
            f"({', '.join(self.prefixes) or 'none set'}); no request was made"
        )
