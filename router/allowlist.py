"""`ROUTER_CALLBACK_ALLOW`: the only URLs the router will ever call.

A plain string prefix would let `https://svc.internal` admit `https://svc.internal.evil.com`,
so entries are compared by parts: same scheme, host and port, and a path under the entry's.
A path that some server could read as another path (dot segments, backslashes, `;`
parameters, encoded slashes, once or twice percent-encoded) is refused before any prefix is
compared, and so is a URL that carries credentials.

The text alone cannot say where a request goes: `2130706433`, `0177.0.0.1` or `127.1` are
127.0.0.1 to some resolvers, `::ffff:169.254.169.254` is the metadata address inside an IPv6
one, and a name the list admits may resolve to loopback. So a host written as a number in any
but the standard form is refused here, and `address_refusal` is asked again at connect time,
for each address the name resolved to (`router.delivery`).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import SplitResult, unquote, urlsplit

from router.parsing.callbacks import mask_credentials

_DEFAULT_PORTS = {"http": 80, "https": 443}
# A server or proxy may decode a path more than once; two decodings cover every one seen in
# path-traversal advisories, and a path still changing after that is refused outright.
_MAX_DECODINGS = 2
_NOT_UNDER = "is not under any ROUTER_CALLBACK_ALLOW prefix"
# WHATWG URL parsers (and inet_aton) read a host whose last label is a number as IPv4.
_NUMERIC_LABEL = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)", re.IGNORECASE)
# Addresses that carry an IPv4 address inside an IPv6 one: mapped, NAT64, 6to4.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# 0.0.0.0/8 is "this host" (Linux connects 0.0.0.0 to the local host); Python names it only
# private. The rest of the kinds come from `ipaddress`.
_THIS_HOST = ipaddress.IPv4Network("0.0.0.0/8")
# Instance metadata that is not link-local: AWS's IPv6 endpoint on Nitro instances.
_METADATA = frozenset({ipaddress.IPv6Address("fd00:ec2::254")})
_LOCALHOST = "localhost"


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


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def host_spelling_problem(hostname: str) -> str | None:
    """Why a host's spelling could reach an address other than the one it seems to name."""
    if ":" in hostname:
        try:
            literal = ipaddress.IPv6Address(hostname)
        except ValueError:
            return None  # not an address: no prefix can match it either
        if _embedded_ipv4(literal) is not None:
            return (
                f"its host {hostname} is an IPv4 address inside an IPv6 address; name the "
                "IPv4 address itself"
            )
        return None
    last = hostname.removesuffix(".").rsplit(".", 1)[-1]
    if _NUMERIC_LABEL.fullmatch(last) is None:
        return None
    try:
        canonical = str(ipaddress.IPv4Address(hostname)) == hostname
    except ValueError:
        canonical = False
    if canonical:
        return None
    return (
        f"its host {hostname} is an IP address in a non-standard form (decimal, octal, hex or "
        "shortened), which resolvers read differently; write it as four decimal numbers"
    )


def _address_kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """What makes `address` a target the router must not reach by name, if anything does."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in _METADATA:
            return "cloud metadata"
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return _address_kind(embedded)
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_unspecified or address in _THIS_HOST:
        return "this host"
    if address.is_multicast or address.is_reserved:
        return "not a unicast host"
    return None


def address_refusal(host: str, address: str) -> str | None:
    """Why the router must not connect to `address`, which `host` (from the URL) resolved to.

    Loopback, link-local (cloud metadata), "this host", multicast and reserved addresses are
    reached only through a URL that names that very address, which the allow-list then names
    too; loopback also through `localhost` names. A name resolving there (DNS rebinding, a
    hosts file, a resolver an attacker controls) is refused: no request is made.
    """
    try:
        resolved = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return (
            f"callback host {host} resolved to {address!r}, not an IP address; no request was made"
        )
    kind = _address_kind(resolved)
    if kind is None:
        return None
    try:
        if ipaddress.ip_address(host) == resolved:
            return None
    except ValueError:
        pass
    name = host.lower().removesuffix(".")
    if kind == "loopback" and (name == _LOCALHOST or name.endswith("." + _LOCALHOST)):
        return None  # RFC 6761: localhost names are loopback by definition
    return (
        f"callback host {host} resolved to {address} ({kind}), which the router reaches only "
        "when ROUTER_CALLBACK_ALLOW names that address itself; no request was made"
    )


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
        problem = host_spelling_problem(hostname) or _path_problem(parts.path)
        if problem:
            return problem
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
