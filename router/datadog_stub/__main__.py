"""`python -m router.datadog_stub --port N`: serve the stub Datadog API until interrupted."""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

from router.datadog_stub.harness import DEFAULT_HOST, StubServer
from router.datadog_stub.state import StubState

# Unassigned and away from the Datadog Agent's own ports (8125 DogStatsD, 8126 APM).
DEFAULT_PORT = 8787

# `--demo`: the sample monitor `router demo` drives, defined up front (every group OK) so that
# `router dev` enriches from the first notification; `router demo` redefines it as it goes.
DEMO_MONITOR = {
    "id": 1001,
    "name": "Bank charge API errors",
    "tags": ["team:payments", "service:bank-charge"],
    "groups": {"bank_code:0001,env:prod": "OK", "bank_code:0002,env:prod": "OK"},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m router.datadog_stub",
        description="A stub Datadog API serving recorded response shapes, for tests and dev.",
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"bind address (default {DEFAULT_HOST})"
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"(default {DEFAULT_PORT}; 0: any free port)"
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help=f"define the sample monitor {DEMO_MONITOR['id']} that `router demo` uses",
    )
    args = parser.parse_args(argv)

    state = StubState()
    if args.demo:
        state.define_monitor(DEMO_MONITOR)
    try:
        server = StubServer(state, host=args.host, port=args.port)
    except OSError as exc:
        parser.error(f"cannot listen on {args.host}:{args.port}: {exc.strerror}")

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    server.start()
    # The first line says where it listens, so a parent process started with --port 0 can read it.
    print(f"datadog stub listening on {server.url}", flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
