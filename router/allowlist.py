"""`ROUTER_CALLBACK_ALLOW`: the only URLs the router will ever call.

A plain string prefix would let `https://svc.internal` admit `https://svc.internal.evil.com`,
so entries are compared by parts: same scheme, host and port, and a path under the entry's.
A path that some server could read as another path (dot segments, backslashes, `;`
parameters, encoded slashes, once or twice percent-encoded) is refused before any prefix is
compared, and so is a URL that carries credentials.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import SplitResult, unquote, urlsplit

from router.parsing.callbacks import mask_credentials

_DEFAULT_PORTS = {"http": 80, "https": 443}
# A server or proxy may decode a path more than once; two decodings cover every one seen in
# path-traversal advisories, and a path still changing after that is refused outright.
_MAX_DECODINGS = 2
_NOT_UNDER = "is not under any ROUTER_CALLBACK_ALLOW prefix"


def _port(parts: SplitResult) -> int | None:
    try:
        port = parts.port
    except ValueError:
        return None
    if port is None:
        return _DEFAULT_PORTS.get(parts.scheme.lower())
    return port if port > 0 else None


def _path_problem(path: str) -> str | None:
    """Why a server could read `path` as a path outside the prefix it is compared with."""
    readings = [path]
    for _ in range(_MAX_DECODINGS):
        readings.append(unquote(readings[-1]))
    if readings[-1] != unquote(readings[-1]):
        return f"its path is percent-encoded more than {_MAX_DECODINGS} times"
    slashes = path.count("/")
    for reading in readings:
        if "\\" in reading:
            # IIS and WHATWG URL parsers (many proxies) read a backslash as `/`.
            return "its path contains a backslash, which some servers read as /"
        if ";" in reading:
            # Tomcat and Spring drop `;...` parameters: `/breaker/..;/admin` is `/admin` there.
            return 'its path contains ";", which some servers read as a path parameter'
        if reading.count("/") != slashes:
            return "its path contains an encoded slash (%2F), which some servers decode"
        # HTTP clients resolve `/breaker/../admin` to `/admin`: it could escape the prefix.
        if any(segment in (".", "..") for segment in reading.split("/")):
            return "its path contains a dot segment (. or .., perhaps percent-encoded)"
    return None


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
        return self._problem(url) is None

    def refusal(self, url: str) -> str:
        """Why a URL is refused, for the dead-letter reason and the 202 answer."""
        shown = mask_credentials(url)
        problem = self._problem(url) or _NOT_UNDER
        if problem is _NOT_UNDER:
            return (
                f"callback URL {shown} {_NOT_UNDER} "
                f"({', '.join(self.prefixes) or 'none set'}); no request was made"
            )
        return f"callback URL {shown} is refused: {problem}; no request was made"

    def _problem(self, url: str) -> str | None:
        try:
            parts = urlsplit(url)
            hostname = parts.hostname
        except ValueError:  # e.g. an unbalanced IPv6 bracket
            return _NOT_UNDER
        scheme = parts.scheme.lower()
        port = _port(parts)
        if scheme not in _DEFAULT_PORTS or not hostname or port is None:
            return _NOT_UNDER
        if "@" in parts.netloc:
            return "it carries credentials (user:password@), which the router never sends"
        path_problem = _path_problem(parts.path)
        if path_problem:
            return path_problem
        for prefix in self.prefixes:
            allowed = urlsplit(prefix)
            if (
                allowed.scheme.lower() == scheme
                and allowed.hostname == hostname
                and _port(allowed) == port
                and _path_under(parts.path or "/", allowed.path)
            ):
                return None
        return _NOT_UNDER
