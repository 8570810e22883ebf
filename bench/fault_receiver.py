"""A callback endpoint for the fault runs: records every `webhook-id` it answers, can be down.

"Down" is what a crashed service looks like from the router: nothing listens on the port, so
every attempt is a refused connection. `up()` listens on the same port again.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass(frozen=True)
class Receipt:
    """One callback request the endpoint answered with 200."""

    webhook_id: str
    at: float
    body: dict[str, Any]


@dataclass
class CallbackEndpoint:
    """Answers 200 to every correctly signed POST; a bad signature is counted and answered 400."""

    secret: str
    delay_s: float = 0.0
    receipts: list[Receipt] = field(default_factory=list)
    bad_signatures: int = 0
    port: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- up and down -----------------------------------------------------------------------

    def up(self) -> None:
        if self._server is not None:
            return
        server = _QuietServer(("127.0.0.1", self.port), _handler(self))
        server.daemon_threads = True
        self.port = int(server.server_address[1])
        threading.Thread(target=server.serve_forever, name="callback", daemon=True).start()
        self._server = server

    def down(self) -> None:
        """Stop listening: from now on the router's attempts are refused connections."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    # -- what it saw -----------------------------------------------------------------------

    def record(self, receipt: Receipt) -> None:
        with self._lock:
            self.receipts.append(receipt)

    def snapshot(self) -> list[Receipt]:
        with self._lock:
            return list(self.receipts)

    def delivered_ids(self) -> set[str]:
        return {r.webhook_id for r in self.snapshot()}

    def duplicates(self) -> int:
        """Receipts of a `webhook-id` already received: at-least-once's visible cost."""
        counts = Counter(r.webhook_id for r in self.snapshot())
        return sum(n - 1 for n in counts.values())

    def first_receipts(self) -> dict[str, Receipt]:
        first: dict[str, Receipt] = {}
        for receipt in self.snapshot():
            first.setdefault(receipt.webhook_id, receipt)
        return first


class _QuietServer(ThreadingHTTPServer):
    """No traceback when a worker is SIGKILLed mid-request: that is the fault being tested."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


def _handler(endpoint: CallbackEndpoint) -> type[BaseHTTPRequestHandler]:
    verifier = Webhook(endpoint.secret)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                parsed = verifier.verify(body, headers)
            except WebhookVerificationError:
                with endpoint._lock:
                    endpoint.bad_signatures += 1
                self._answer(400)
                return
            if endpoint.delay_s:
                time.sleep(endpoint.delay_s)
            endpoint.record(Receipt(headers["webhook-id"], time.time(), parsed))
            self._answer(200)

        def _answer(self, status: int) -> None:
            payload = json.dumps({"status": status}).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
