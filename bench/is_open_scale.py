"""`is_open` with 10, 1,000 and 100,000 keys under one breaker name: cost, memory, stalls.

For each size, in one run: N keys of one name are written to Redis as the write scripts
leave them (10 % open, pipelined HSETs for speed; revisions and last-write times included;
each key's reason and source name its own group and event, as a callback per group leaves
them), plus one key ramping through a real `close`. A `Breakers` with its sync thread loads them.

- cost per call (`timeit`, best of --repeat runs of --loops calls) of `is_open` for a closed
  key, an open key and the ramping key, against a plain dict lookup measured in the same run;
- process memory per key: what `tracemalloc` sees a second, write-only handle allocate for
  its snapshot, divided by N;
- the longest stall of `is_open` in another thread: a thread calls `is_open` in a loop and
  records the longest gap between two calls, while (a) nothing happens (the baseline: the
  OS and the interpreter alone), (b) another process writes --changes changes, which arrive
  through the channel, (c) another process writes --changes changes whose messages are
  lost, repaired by a handle's periodic (incremental) resyncs every 50 ms, (d) one full
  resync, after Redis drops the sync thread's connection (what every reconnect does).
  Writers are other processes, as the router's callbacks are, so the only Python work
  competing with the spinning thread is the client's own sync thread. Each phase prints:
  the longest gap; the longest part of a gap the thread spent neither running nor waiting
  for a CPU (Linux's per-thread CPU time and run-queue wait tell them apart), which is
  waiting for the GIL, or for a virtual CPU the host did not run; the sync thread's longest
  stretch between two calls that let the GIL go (its CPU time: how long the client holds
  the GIL at a stretch, whatever the machine does meanwhile; see `time_sync_stretches`),
  with where it ended at the largest size; the longest full GC.

    chrt -f 1 .venv/bin/python bench/is_open_scale.py [--sizes 10,1000,100000]
                     [--loops 200000] [--switch-interval 0.0005]

`chrt -f 1` (real-time priority, as root) keeps other processes on a shared machine from
preempting the bench's threads, the GIL's holder included, which would read as waiting for
the GIL. The spinning thread makes a system call between two calls (reading its schedstat),
which lets the GIL go as a request handler's own I/O does, and rests 1 ms every 10 ms so that
the kernel never throttles it for using up its real-time budget (the rest is not a gap).

Redis is 127.0.0.1:6379 unless BENCH_REDIS_URL says otherwise. Asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import os
import select
import socket
import sys
import threading
import time
import timeit
import tracemalloc
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

import redis
from _common import child, delete_prefixed, environment_line, redis_url, unique_prefix
from breaker_client import Breakers

from router.keys import BreakerKeys

NAME = "bench-bank"
# Pipelined writes per round trip while filling Redis.
FILL_BATCH = 2000
# Long enough that the ramping key is still ramping while it is measured.
RAMP_WINDOW_S = 3600.0
# The resync phase's interval: many periodic resyncs within it.
RESYNC_S = 0.05
# Between two changes the writing child makes; and after the last, for it to be handled.
PAUSE_S = 0.02
SETTLE_S = 0.3
CHILD_TIMEOUT_S = 120.0
# A full resync of 100,000 keys while another thread spins on the GIL takes tens of seconds.
RESYNC_TIMEOUT_S = 600.0
# The spinning thread rests REST_S after every SPIN_S: a real-time thread that never leaves its
# CPU uses up the kernel's real-time budget (sched_rt_runtime_us, 95 % of each second) and is
# then stopped for 50 ms (dmesg: "RT throttling activated"), which reads as a 50 ms GIL wait.
SPIN_S = 0.01
REST_S = 0.001
PHASES = {"idle": "idle", "change": "changes", "resync": "periodic resyncs", "full": "full resync"}

Row = dict[str, Any]


class MutedKeys(BreakerKeys):
    """The same keys, but a change channel nobody listens to: each write's message is lost."""

    @property
    def channel(self) -> str:
        return f"{self.prefix}:nobody-listens"


def fill(client: redis.Redis, keys: BreakerKeys, n: int) -> None:
    """N keys of NAME, every tenth open, as the write scripts store them."""
    now_ms = int(time.time() * 1000)
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        member = keys.member(NAME, f"{i:06d}")
        state = "open" if i % 10 == 0 else "closed"
        # Texts as a callback for one group leaves them: its own event in every key's.
        reason = f"{'alert' if state == 'open' else 'recovery'}: [{state}] bank_code:{i:06d}"
        source = f"monitor:1 event:{7_000_000 + i} delivery:{i:08x}"
        fields = {"state": state, "reason": reason, "source": source, "rev": i + 1}
        fields |= {"since_ms": now_ms, "version": now_ms, "ramp_ms": 0, "updated_ms": now_ms}
        pipe.hset(keys.record(member), mapping=fields)
        pipe.sadd(keys.index, member)
        pipe.zadd(keys.revisions, {member: i + 1})
        pipe.zadd(keys.written, {member: now_ms})
        if i % FILL_BATCH == FILL_BATCH - 1:
            pipe.execute()
    pipe.set(keys.revision, n)
    pipe.execute()


def write_changes(conn: Connection, url: str, prefix: str, codes: list[str], lost: bool) -> None:
    """In a child process (see `_common.child`), started and ready before a phase is measured,
    since starting a process holds the parent's GIL as long as the fork takes: once told to go,
    open each code (or close it with its message lost), one every PAUSE_S."""
    writer = Breakers.from_url(url, prefix=prefix, sync=False)
    if lost:
        writer._store.keys = MutedKeys(prefix)
    conn.send("ready")
    conn.recv()
    for code in codes:
        if lost:
            writer.close(NAME, code, reason="bench: lost message", ramp=False)
        else:
            writer.open(NAME, code, reason="bench: change")
        time.sleep(PAUSE_S)
    writer.stop()
    conn.send("done")


def let_write(conn: Connection) -> None:
    """Tell a ready `write_changes` child to go and wait (without the GIL) until it is done,
    plus long enough for the last change to be handled."""
    conn.send("go")
    if not conn.poll(CHILD_TIMEOUT_S) or conn.recv() != "done":
        raise SystemExit("bench: the writing child did not finish its changes")
    time.sleep(SETTLE_S)


def reconnect(b: Breakers, client: redis.Redis) -> None:
    """Make Redis drop `b`'s subscription, then wait until its sync thread has resynced."""
    pubsub = b._syncer._pubsub
    assert pubsub is not None and pubsub.connection is not None
    host, port = pubsub.connection._sock.getsockname()[:2]  # type: ignore[union-attr]
    # The sync thread's own counters: `stats()` builds a figure over every breaker, which at
    # 100,000 keys is work (and garbage) the phase would measure as the client's.
    syncer = b._syncer
    before = syncer.resyncs
    client.client_kill_filter(_type="pubsub", addr=f"{host}:{port}")
    deadline = time.monotonic() + RESYNC_TIMEOUT_S
    while syncer.resyncs == before or not syncer.connected:
        if time.monotonic() > deadline:
            raise SystemExit("bench: the sync thread did not resync after its connection dropped")
        time.sleep(0.05)


def best_ns(stmt: str, names: dict[str, object], loops: int, repeat: int) -> float:
    timer = timeit.Timer(stmt, globals=names)
    timer.timeit(min(loops, 1000))
    return min(timer.repeat(repeat=repeat, number=loops)) / loops * 1e9


class Stall(NamedTuple):
    """What a thread calling `is_open` in a loop saw while something else ran, in ms."""

    gap: float  # the longest gap between two calls, whatever the cause
    gil: float  # the longest part of a gap spent neither running nor waiting for a CPU
    full_gc: float  # the longest full garbage collection meanwhile (0: none ran)
    work: float  # the sync threads' longest stretch holding the GIL, CPU time (see below)
    work_ended: str  # where that stretch ended


# The sync threads' longest stretch in the current phase, in CPU seconds, and where it ended.
LONGEST_STRETCH: list[Any] = [0.0, ""]
# Per sync thread: its CPU time when it last took the GIL back.
STRETCH_BEGAN: dict[int, float] = {}


def time_sync_stretches() -> None:
    """Time every stretch a sync thread runs between two calls that let the GIL go (a pause,
    a socket's send, receive, connect or poll, an Event's wait) in its own CPU time: how long
    it holds the GIL at a stretch, whatever the OS does meanwhile. An upper bound: calls that
    let the GIL go but are not watched here (getaddrinfo, a lock's wait) do not end one."""

    def releasing(call: Callable[..., Any]) -> Callable[..., Any]:
        def watched(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread().name != "breakers-sync":
                return call(*args, **kwargs)
            ident = threading.get_ident()
            now = time.thread_time()
            began = STRETCH_BEGAN.get(ident)
            if began is not None and now - began > LONGEST_STRETCH[0]:
                LONGEST_STRETCH[:] = [now - began, ended_in(sys._getframe(1))]
            try:
                return call(*args, **kwargs)
            finally:
                STRETCH_BEGAN[ident] = time.thread_time()

        return watched

    time.sleep = releasing(time.sleep)
    threading.Event.wait = releasing(threading.Event.wait)  # type: ignore[method-assign]
    for name in ("sendall", "recv_into", "recv", "connect"):
        setattr(socket.socket, name, releasing(getattr(socket.socket, name)))
    # redis-py waits for a reply (or a channel message, for up to 0.2 s) in poll(): without
    # it, an idle sync thread's loop would add up to one long "stretch".
    real_poll = select.poll

    class WatchedPoll:
        def __init__(self) -> None:
            self._poll = real_poll()
            self.register = self._poll.register
            self.poll = releasing(self._poll.poll)

    select.poll = WatchedPoll  # type: ignore[misc,assignment]


def ended_in(frame: Any) -> str:
    """The client's innermost functions on the stack where a stretch ended."""
    names: list[str] = []
    while frame is not None and len(names) < 3:
        if "breaker_client" in frame.f_code.co_filename:
            names.append(frame.f_code.co_qualname)
        frame = frame.f_back
    return " < ".join(names)


def stall_fields(phase: str, stall: Stall) -> Row:
    return {
        f"gap_{phase}": stall.gap,
        f"gil_{phase}": stall.gil,
        f"gc_{phase}": stall.full_gc,
        f"work_{phase}": stall.work,
        f"ended_{phase}": stall.work_ended,
    }


def cpu_and_queue_ns(fd: int) -> tuple[int, int]:
    """This thread's time on a CPU (exact: schedstat's own figure lags by up to a tick) and
    waiting in a run queue (schedstat, brought up to date whenever the thread is scheduled
    in, so current while it runs), in ns."""
    return time.thread_time_ns(), int(os.pread(fd, 100, 0).split()[1])


def longest_stall(breakers: Breakers, action: Callable[[], None]) -> Stall:
    """How long `is_open` in another thread stalled while `action` runs.

    A gap is wall time between two calls. Part of it may be the OS running other processes
    (this thread waits in a run queue), which says nothing of the client; what is left, time
    the thread was runnable by the OS yet not running, is waiting for the GIL that another
    thread of this process held: the client's sync thread, here. Linux's per-thread
    schedstat tells the two apart; reading it is a system call, which also lets the GIL go
    between calls, as a request handler's own I/O does.
    """
    full_gcs: list[float] = []
    began = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if info["generation"] == 2:
            if phase == "start":
                began[0] = time.perf_counter()
            else:
                full_gcs.append(time.perf_counter() - began[0])

    stop = threading.Event()
    started = threading.Event()
    worst = [0.0, 0.0]

    def spin() -> None:
        fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        is_open, clock = breakers.is_open, time.perf_counter
        last = clock()
        last_cpu, last_queue = cpu_and_queue_ns(fd)
        longest = longest_gil = 0.0
        rest_at = last + SPIN_S
        started.set()
        while not stop.is_set():
            is_open(NAME, "000001")
            now = clock()
            on_cpu, queued = cpu_and_queue_ns(fd)
            gap = now - last
            gil = gap - (on_cpu - last_cpu + queued - last_queue) / 1e9
            longest, longest_gil = max(longest, gap), max(longest_gil, gil)
            last, last_cpu, last_queue = now, on_cpu, queued
            if now >= rest_at:
                # The rest is not a gap; taking the GIL back after it is (it counts from its end).
                time.sleep(REST_S)
                last, rest_at = now + REST_S, now + REST_S + SPIN_S
        os.close(fd)
        worst[:] = [longest, longest_gil]

    # Start each phase with nothing pending for a full collection, so that one running during
    # it was set off by the phase's own allocations, not by the bench's before it.
    gc.collect()
    LONGEST_STRETCH[:] = [0.0, ""]
    thread = threading.Thread(target=spin)
    gc.callbacks.append(on_gc)
    thread.start()
    started.wait(5)
    try:
        action()
    finally:
        stop.set()
        thread.join(60)
        gc.callbacks.remove(on_gc)
    return Stall(
        worst[0] * 1000,
        worst[1] * 1000,
        max(full_gcs, default=0.0) * 1000,
        LONGEST_STRETCH[0] * 1000,
        LONGEST_STRETCH[1],
    )


def wait_for(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("bench: a change did not arrive within the wait")
        time.sleep(0.0005)


def measure(url: str, client: redis.Redis, prefix: str, n: int, args: argparse.Namespace) -> Row:
    """Every figure for one size."""
    keys = BreakerKeys(prefix)
    fill(client, keys, n)
    loading = time.perf_counter()
    b = Breakers.from_url(url, prefix=prefix, ramp_window=RAMP_WINDOW_S, startup_wait=120)
    writer = Breakers.from_url(url, prefix=prefix, sync=False)
    try:
        if not b.wait_ready(120) or b.stats()["breakers"] < n:
            raise SystemExit(f"bench: the snapshot of {n} keys did not load")
        load_s = time.perf_counter() - loading
        writer.open(NAME, "ramp", reason="bench")
        writer.close(NAME, "ramp", reason="bench: ramping")
        wait_for(lambda: b.state(NAME, "ramp", local=True).state == "recovering", 5)
        assert b.is_open(NAME, "000000") and not b.is_open(NAME, "000001")
        gc.collect()
        names: dict[str, object] = {"is_open": b.is_open, "d": {NAME: {"k": 1}}}
        names |= {"name": NAME}
        row: Row = {
            "load_s": load_s,
            "dict": best_ns("d.get(name)", names, args.loops, args.repeat),
            "closed": best_ns("is_open(name, '000001')", names, args.loops, args.repeat),
            "open": best_ns("is_open(name, '000000')", names, args.loops, args.repeat),
            "ramp": best_ns("is_open(name, 'ramp')", names, args.loops, args.repeat),
        }

        def idle() -> None:
            time.sleep(0.5)

        opened = [f"{(i * 10 + 1) % n:06d}" for i in range(args.changes)]

        row |= stall_fields("idle", longest_stall(b, idle))
        # Another process writes, as the router's callbacks do: only the sync thread's work
        # competes with the spinning thread here, not this bench's own.
        with child(write_changes, url, prefix, opened, False) as writing:
            row |= stall_fields("change", longest_stall(b, lambda: let_write(writing)))
        wait_for(lambda: all(b.is_open(NAME, code) for code in opened), 5)

        # Periodic resyncs, each repairing a change whose message was lost, in a handle that
        # resyncs every RESYNC_S (30 s by default) so that the phase holds many of them.
        resyncing = Breakers.from_url(
            url, prefix=prefix, resync_interval=RESYNC_S, startup_wait=120
        )
        try:
            if not resyncing.wait_ready(120):
                raise SystemExit("bench: the resyncing handle did not load")
            before = resyncing._syncer.resyncs
            with child(write_changes, url, prefix, opened, True) as losing:
                phase = longest_stall(resyncing, lambda: let_write(losing))
            row |= stall_fields("resync", phase)
            row["resyncs"] = resyncing._syncer.resyncs - before
            wait_for(lambda r=resyncing: not any(r.is_open(NAME, code) for code in opened), 5)
        finally:
            resyncing.stop()
        del resyncing  # freed here and now, not during the next phase

        # A full resync, as after any reconnect: Redis drops the sync thread's connection.
        started = time.perf_counter()
        row |= stall_fields("full", longest_stall(b, lambda: reconnect(b, client)))
        row["full_s"] = time.perf_counter() - started

        # Memory last: measured before the stalls, tracing 100,000 keys set off one 60-110 ms
        # stall in the phase after it (every run; none with the trace left out), which the
        # figures would have shown as the client's.
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        probe = Breakers.from_url(url, prefix=prefix, sync=False)
        probe.refresh()
        row["bytes_per_key"] = (tracemalloc.get_traced_memory()[0] - before) / n
        tracemalloc.stop()
        probe.stop()
    finally:
        for handle in (b, writer):
            handle.stop()
    return row


def main() -> None:
    time_sync_stretches()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sizes", default="10,1000,100000", help="keys per run, comma-separated")
    parser.add_argument("--loops", type=int, default=200_000, help="is_open calls per timeit run")
    parser.add_argument("--repeat", type=int, default=5, help="timeit runs; the best is kept")
    parser.add_argument("--changes", type=int, default=20, help="changes and resyncs per size")
    parser.add_argument(
        "--switch-interval",
        type=float,
        default=None,
        help="sys.setswitchinterval for the run (default: the interpreter's 5 ms)",
    )
    args = parser.parse_args()
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    sizes = [int(size) for size in args.sizes.split(",")]

    url = redis_url()
    client = redis.Redis.from_url(url, decode_responses=True)
    print(environment_line(client))
    print(
        f"timeit best of {args.repeat} x {args.loops:,} calls, ns per call; stalls: longest gap "
        f"between two is_open calls in another thread, over {args.changes} changes/resyncs; "
        f"GIL switch interval {sys.getswitchinterval() * 1000:g} ms"
    )
    results: dict[int, Row] = {}
    prefixes: list[str] = []
    try:
        for n in sizes:
            prefix = unique_prefix()
            prefixes.append(prefix)
            row = results[n] = measure(url, client, prefix, n, args)
            delete_prefixed(client, prefix)
            print(
                f"{n:>7,} keys: dict {row['dict']:6.1f} ns; is_open closed {row['closed']:6.1f} ns "
                f"({row['closed'] / row['dict']:.1f}x dict), open {row['open']:6.1f} ns, ramping "
                f"{row['ramp']:6.1f} ns ({row['ramp'] / row['closed']:.2f}x closed); snapshot "
                f"{row['bytes_per_key']:,.0f} B/key"
            )
            phases = ", ".join(
                f"{label} {row['gap_' + phase]:.2f} / {row['gil_' + phase]:.2f} / "
                f"{row['work_' + phase]:.2f} / {row['gc_' + phase]:.0f}"
                for phase, label in PHASES.items()
            )
            print(
                f"{'':>13}stalls in ms (longest gap / of it waiting for the GIL / the sync "
                f"thread's longest stretch holding it / longest full GC): {phases}; "
                f"{row['resyncs']:.0f} periodic resyncs; the first load took "
                f"{row['load_s']:.1f} s, the full resync {row['full_s']:.1f} s"
            )
        largest = results[sizes[-1]]
        print(
            f"at {sizes[-1]:,} keys, the longest wait of is_open for the GIL / the sync thread's "
            "longest stretch holding it (where it ended): "
            + ", ".join(
                f"{label} {largest['gil_' + phase]:.2f} / {largest['work_' + phase]:.2f} ms "
                f"({largest['ended_' + phase] or '-'})"
                for phase, label in PHASES.items()
            )
        )
        base = results[sizes[0]]
        for n in sizes[1:]:
            row = results[n]
            print(
                f"{n:,} vs {sizes[0]:,} keys: is_open closed "
                f"{row['closed'] / base['closed']:.2f}x, "
                f"open {row['open'] / base['open']:.2f}x, ramping {row['ramp'] / base['ramp']:.2f}x"
            )
    finally:
        delete_prefixed(client, *prefixes)
        client.close()


if __name__ == "__main__":
    main()
