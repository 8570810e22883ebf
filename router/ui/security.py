"""Who may act, and the headers that keep the pages safe.

Without `ROUTER_ADMIN_TOKEN` the dashboard and API are read-only. With it, a person signs in
on the page (token plus their name) and gets a signed session cookie, scoped to `/ui`,
`SameSite=Strict`, whose key is derived from the token (rotating the token signs everyone out).
Every form carries the session's CSRF token, checked on each POST. The JSON API reads no cookie
at all: it takes the token as `Authorization: Bearer` only, so a browser cannot be tricked into
acting through it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from flask import Flask, Request, Response, session

from router.config import Settings

# One night's shift; after that a person signs in again.
SESSION_MAX_AGE_S = 12 * 3600
# The longest stated name kept in a breaker's history; longer is a mistake, not a name.
MAX_NAME_CHARS = 80
# Everything from this origin only, nothing inline (Jinja escapes what senders wrote; this
# stops what might slip through), no framing, forms only back to us.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_SESSION_KEY_LABEL = b"breaker-router dashboard session v1"


class Refused(Exception):
    """A request the dashboard will not act on; `status` says why (401, 403, 400)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def configure_sessions(app: Flask, settings: Settings) -> None:
    """Signed session cookies for the dashboard, only when there is a token to sign in with."""
    if settings.admin_token is None:
        return
    app.secret_key = hmac.new(
        settings.admin_token.encode(), _SESSION_KEY_LABEL, hashlib.sha256
    ).hexdigest()
    app.config.update(
        SESSION_COOKIE_NAME="router_ui",
        SESSION_COOKIE_PATH="/ui",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
    )


def add_security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def token_matches(presented: str, expected: str | None) -> bool:
    """Constant-time comparison; nothing matches when no token is configured."""
    if expected is None or not presented:
        return False
    return hmac.compare_digest(presented.strip().encode(), expected.encode())


def check_bearer(request: Request, expected: str | None) -> None:
    """The API's check: `Authorization: Bearer <ROUTER_ADMIN_TOKEN>`, nothing else."""
    if expected is None:
        raise Refused("actions are disabled: ROUTER_ADMIN_TOKEN is not set on the router", 403)
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Refused("actions need 'Authorization: Bearer <ROUTER_ADMIN_TOKEN>'", 401)
    if not token_matches(value, expected):
        raise Refused("the bearer token is not ROUTER_ADMIN_TOKEN", 401)


def stated_name(value: object, *, field: str = "by") -> str:
    """The name a person gave, written into breaker history and the audit log."""
    if not isinstance(value, str) or not value.strip():
        raise Refused(f"{field}: say who you are (your name goes into the history)", 422)
    name = " ".join(value.split())
    if len(name) > MAX_NAME_CHARS or not name.isprintable():
        raise Refused(f"{field}: expected a name of at most {MAX_NAME_CHARS} characters", 422)
    return name


# -- the page's session -----------------------------------------------------------------------


def csrf_token() -> str:
    """This session's CSRF token, created on first use."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def check_csrf(presented: str | None) -> None:
    expected = session.get("csrf")
    if not isinstance(expected, str) or not presented:
        raise Refused("the form has expired or came from another site; reload and try again", 400)
    if not hmac.compare_digest(presented.encode(), expected.encode()):
        raise Refused("the form has expired or came from another site; reload and try again", 400)


def signed_in_name() -> str | None:
    """The stated name of the person signed in on this session, or None."""
    name, at = session.get("name"), session.get("signed_in_at")
    if not isinstance(name, str) or not isinstance(at, int | float):
        return None
    if time.time() - at > SESSION_MAX_AGE_S:
        session.clear()
        return None
    return name


def sign_in(name: str) -> None:
    # A fresh session (and CSRF token) at sign-in, so a token planted before it is useless.
    session.clear()
    session["name"] = name
    session["signed_in_at"] = int(time.time())
    csrf_token()


def require_signed_in(settings: Settings) -> str:
    if settings.admin_token is None:
        raise Refused("actions are disabled: ROUTER_ADMIN_TOKEN is not set on the router", 403)
    name = signed_in_name()
    if name is None:
        raise Refused("sign in with ROUTER_ADMIN_TOKEN to act; this page is read-only", 401)
    return name
