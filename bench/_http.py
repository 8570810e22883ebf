"""Light HTTP/1.1 for the storm benchmark: a sender and a callback sink that cost little CPU.

The storm runs everything on one small machine, so what drives it must not compete with what
it measures: the sender writes prepared requests over kept-alive connections (reconnecting
when the server closes one) and reads only the status line, the headers and the body length;
the sink (`python bench/_http.py --port N`, its own process) counts the callbacks it receives
and what their enrichment was, answers 200, and tells its counts on `GET /counts`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from collections.abc import Sequence

# Reading one answer may take this long under load before the sender gives up on it.
ANSWER_TIMEOUT_S = 60.0


def _enrichment_status(body: bytes) -> str:
    try:
        return str(json.loads(body)["enrichment"]["status"])
    except (ValueError, KeyError, TypeError):
        return "unreadable"


def post_request(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{head}\r\n"
    ).encode() + body


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, whether the server keeps the connection open) of one answer."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, keep = 0, True
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and value.strip().lower() == "close":
            keep = False
    await reader.readexactly(length)
    return status, keep


async def _send_all(host: str, port: int, requests: Sequence[bytes], concurrency: int) -> list[int]:
    statuses = [0] * len(requests)
    next_index = iter(range(len(requests)))

    async def connection() -> None:
        reader = writer = None
        for index in next_index:
            for _attempt in range(3):  # a kept-alive connection the server just closed
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                assert reader is not None
                writer.write(requests[index])
                try:
                    status, keep = await asyncio.wait_for(
                        _read_answer(reader), timeout=ANSWER_TIMEOUT_S
                    )
                except (asyncio.IncompleteReadError, ConnectionError):
                    writer.close()
                    reader = writer = None
                    continue
                statuses[index] = status
                if not keep:
                    writer.close()
                    reader = writer = None
                break
        if writer is not None:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return statuses


def send_all(host: str, port: int, requests: Sequence[bytes], concurrency: int) -> list[int]:
    """Every request sent, `concurrency` at a time; each one's status (0: never answered)."""
    return asyncio.run(_send_all(host, port, requests, concurrency))


class _Sink:
    def __init__(self) -> None:
        self.count = 0
        self.enrichment: Counter[str] = Counter()
        self.first_at: float | None = None
        self.last_at: float | None = None

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                if lines[0].startswith("GET /counts"):
                    answer = json.dumps(
                        {
                            "count": self.count,
                            "enrichment": dict(self.enrichment),
                            "first_at": self.first_at,
                            "last_at": self.last_at,
                        }
                    ).encode()
                else:
                    now = time.time()
                    self.count += 1
                    self.first_at = self.first_at or now
                    self.last_at = now
                    self.enrichment[_enrichment_status(body)] += 1
                    answer = b'{"ok":true}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(answer)}\r\n\r\n".encode()
                    + answer
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def _run_sink(port: int) -> None:
    sink = _Sink()
    server = await asyncio.start_server(sink.serve, "127.0.0.1", port)
    print(f"sink listening on http://127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description="the storm benchmark's callback sink")
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(_run_sink(parser.parse_args().port))


if __name__ == "__main__":
    main()
