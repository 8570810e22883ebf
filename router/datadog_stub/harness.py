"""Run the stub in a background thread, and drive any running stub over its control API.

`StubServer` is for tests and `router dev` (one process); `StubClient` talks HTTP to a stub
wherever it runs (thread or `python -m router.datadog_stub`). Standard library only.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from router.datadog_stub.app import create_app
from router.datadog_stub.state import StubState
from router.errors import RouterError

# Loopback only: the stub accepts any key by default and must not be reachable from elsewhere.
DEFAULT_HOST = "127.0.0.1"
# Control calls are local and tiny; seconds mean the stub is wedged.
CONTROL_TIMEOUT_S = 5.0


class _QuietHandler(WSGIRequestHandler):
    """No access log line per request: a storm benchmark would print ten thousand."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


class StubServer:
    """The stub on `host:port` (0: any free port) served by threads in this process."""

    def __init__(
        self, state: StubState | None = None, *, host: str = DEFAULT_HOST, port: int = 0
    ) -> None:
        self.state = state or StubState()
        self._server: BaseWSGIServer = make_server(
            host, port, create_app(self.state), threaded=True, request_handler=_QuietHandler
        )
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self._server.host}:{self._server.port}"

    @property
    def port(self) -> int:
        return int(self._server.port)

    def start(self) -> StubServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="datadog-stub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=CONTROL_TIMEOUT_S)

    def client(self) -> StubClient:
        return StubClient(self.url)

    def __enter__(self) -> StubServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class StubControlError(RouterError):
    """The stub's control API refused a request or could not be reached."""


class StubClient:
    """The control API of a stub at `url`."""

    def __init__(self, url: str, *, timeout_s: float = CONTROL_TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self._timeout_s = timeout_s

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise StubControlError(f"{method} {path}: stub answered {exc.code}: {detail}") from exc
        except OSError as exc:
            raise StubControlError(
                f"{method} {path}: stub at {self.url} unreachable: {exc}"
            ) from exc

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        """Block until the stub answers, e.g. after starting `python -m router.datadog_stub`."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self._call("GET", "/stub/health")
                return
            except StubControlError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def reset(self) -> None:
        self._call("POST", "/stub/reset", {})

    def define_monitor(
        self,
        monitor_id: int | str,
        *,
        name: str | None = None,
        groups: Mapping[str, Any] | None = None,
        tags: Sequence[str] = (),
        **extra: Any,
    ) -> None:
        """`groups` maps a group name (`bank_code:0001,env:prod`) to a status such as `Alert`."""
        spec = {"id": str(monitor_id), "name": name, "groups": groups, "tags": list(tags), **extra}
        self._call("POST", "/stub/monitors", spec)

    def define_monitors(self, specs: Sequence[Mapping[str, Any]]) -> None:
        self._call("POST", "/stub/monitors", {"monitors": list(specs)})

    def update_groups(self, monitor_id: int | str, groups: Mapping[str, Any]) -> None:
        self._call("POST", f"/stub/monitors/{monitor_id}/groups", dict(groups))

    def define_event(self, event_id: int | str, *, not_found_calls: int = 0, **fields: Any) -> None:
        """`not_found_calls`: the next N reads answer 404, as right after a real alert."""
        spec = {"id": str(event_id), "not_found_calls": not_found_calls, **fields}
        self._call("POST", "/stub/events", spec)

    def add_fault(
        self,
        path: str,
        *,
        status: int | None = None,
        reset_s: int | None = None,
        sleep_s: float = 0.0,
        times: int | None = 1,
    ) -> None:
        """The next `times` requests under `path` answer `status` and/or after `sleep_s`."""
        spec = {"path": path, "status": status, "reset_s": reset_s, "sleep_s": sleep_s}
        self._call("POST", "/stub/faults", {**spec, "times": times})

    def set_keys(
        self,
        api_keys: Sequence[str] | None,
        app_keys: Sequence[str] | None,
        *,
        status: int = 403,
    ) -> None:
        body = {
            "api_keys": None if api_keys is None else list(api_keys),
            "app_keys": None if app_keys is None else list(app_keys),
            "status": status,
        }
        self._call("POST", "/stub/keys", body)

    def set_rate_limit(self, name: str, *, limit: int, period_s: int) -> None:
        self._call("POST", "/stub/rate-limits", {name: {"limit": limit, "period_s": period_s}})

    def calls(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/stub/calls")
        return result

    def calls_to(self, path: str) -> int:
        """Requests received for exactly `path` (no query string), whatever the answer."""
        paths: dict[str, int] = self.calls()["paths"]
        return paths.get(path, 0)

    def calls_under(self, prefix: str) -> int:
        """Requests received whose path starts with `prefix`."""
        paths: dict[str, int] = self.calls()["paths"]
        return sum(count for seen, count in paths.items() if seen.startswith(prefix))
