"""Breaker records in Redis: atomic versioned writes (Lua), reads, history, delivery markers.

Data layout (`BreakerKeys`, default prefix `breakers`; a *member* is `<name>` or `<name>:<key>`):

- `<prefix>:state:<member>`  hash, one breaker: `state` (closed|open|recovering, what the
  monitor last said), `reason`, `source`, `since_ms`, `version` (event ms of the newest
  monitor write), `ramp_ms`; a person's override `forced` (open|closed), `forced_reason`,
  `forced_by`, `forced_since_ms`, `forced_until_ms` ('' = until cleared); `updated_ms`, `rev`.
- `<prefix>:index`  set of every member written, for resyncs and listings.
- `<prefix>:history:<member>`  stream capped at `history_max` entries, one per change.
- `<prefix>:groups:<member>`  hash, a keyless breaker fed by `apply_callback`: monitor group
  (`monitor:<id> <sorted tags>`) -> `<version> <status>`; the breaker is open while one opens.
- `<prefix>:revision`  counter; every write stores the next value as the record's `rev`, so
  revisions only grow, across a prune and a re-creation too.
- `<prefix>:revisions`  sorted set, member -> revision of its last write (a pruned breaker's
  tombstone too): an incremental resync reads only what is newer than it last saw.
- `<prefix>:written`  sorted set, member -> ms of its last write: what a prune looks at.
- `<prefix>:changes`  pub/sub channel; each change publishes its member as plain text.
- `<prefix>:seen:<webhook-id>`  marker with a TTL: this callback delivery was handled.
- `<prefix>:shadow:<member>`  hash, calls a breaker in shadow mode (record fields
  `shadow_since_ms`, `shadow_by`) let through that it would have refused: `total`, and one
  field per minute (`<start ms>` -> count), the newest `MAX_SHADOW_BUCKETS` of them.

Every Redis failure leaves this module as `BreakerStoreUnavailable`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal, cast

import redis

from breaker_client.errors import BreakerStoreUnavailable
from breaker_client.keys import BreakerKeys
from breaker_client.lua import GROUPS, PRUNE, READ, SHADOW_COUNT, SNAPSHOT, WRITE
from breaker_client.model import (
    HistoryEntry,
    Outcome,
    Record,
    RecordRow,
    State,
    WriteResult,
    row_from_hash,
)

# Enough to read back weeks of flapping for one breaker while bounding memory per breaker.
DEFAULT_HISTORY_MAX = 1000
# Minute buckets of would-be refusals kept per breaker in shadow mode: 31 days while refusing
# all the time, so a report over the last month always has them.
MAX_SHADOW_BUCKETS = 31 * 24 * 60
# Breakers a prune script looks at in one call: keeps each call well under a millisecond of
# Redis time, so a large prune never blocks other clients for long.
PRUNE_BATCH = 200

Action = Literal["open", "close", "force_open", "force_closed", "clear", "shadow_on", "shadow_off"]
# How a group entry is asserted: by its own notification, by a monitor read, or only seen.
GroupAuthority = Literal["event", "read", "seen"]


@contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Turn redis-py and socket errors into `BreakerStoreUnavailable` naming the operation."""
    try:
        yield
    except (redis.RedisError, OSError) as exc:
        raise BreakerStoreUnavailable(
            f"breaker store unavailable while trying to {what}: {type(exc).__name__}: {exc}"
        ) from exc


class Store:
    """Reads and writes breaker records; stateless apart from the client and the scripts."""

    def __init__(
        self, client: redis.Redis, keys: BreakerKeys, *, history_max: int = DEFAULT_HISTORY_MAX
    ) -> None:
        if history_max < 1:
            raise ValueError(f"history_max must be at least 1, got {history_max}")
        self.client = client
        self.keys = keys
        self.history_max = history_max
        self._write = client.register_script(WRITE)
        self._snapshot = client.register_script(SNAPSHOT)
        self._groups = client.register_script(GROUPS)
        self._prune = client.register_script(PRUNE)
        self._read = client.register_script(READ)
        self._shadow_count = client.register_script(SHADOW_COUNT)

    def write(
        self,
        name: str,
        key: str | None,
        action: Action,
        *,
        now_ms: int,
        reason: str,
        source: str = "",
        version: int | None = None,
        ramp_ms: int = 0,
        by: str = "",
        until_ms: int | None = None,
    ) -> tuple[WriteResult, Record]:
        member = self.keys.member(name, key)
        args = [
            member,
            name,
            key or "",
            action,
            reason,
            source,
            _optional_int_arg(version),
            str(now_ms),
            str(ramp_ms),
            str(self.history_max),
            self.keys.channel,
            by,
            _optional_int_arg(until_ms),
        ]
        keys = [self.keys.record(member), self.keys.history(member), self.keys.index]
        with translate_errors(f"{action} breaker {member}"):
            reply = self._write(keys=keys, args=args)
        return _result(member, cast(list[Any], reply))

    def snapshot(
        self,
        name: str,
        states: Sequence[tuple[str | None, bool, int | None]],
        *,
        now_ms: int,
        reason: str,
        source: str,
        version: int | None,
        ramp_ms: int,
        owner: str = "",
    ) -> list[tuple[WriteResult, Record]]:
        args: list[str] = [
            name,
            self.keys.record_prefix,
            self.keys.history_prefix,
            reason,
            source,
            _optional_int_arg(version),
            str(now_ms),
            str(ramp_ms),
            str(self.history_max),
            self.keys.channel,
            owner,
            str(len(states)),
        ]
        for key, is_open, key_version in states:
            member = self.keys.member(name, key)
            args += [member, "open" if is_open else "close", _optional_int_arg(key_version)]
        with translate_errors(f"apply a snapshot to breaker {name}"):
            reply = self._snapshot(keys=[self.keys.index], args=args)
        return [_result(item[0], item[1:]) for item in cast(list[list[Any]], reply)]

    def groups(
        self,
        name: str,
        entries: Sequence[tuple[str, str, int | None, GroupAuthority]],
        *,
        now_ms: int,
        reason: str,
        source: str,
        ramp_ms: int,
        open_statuses: Collection[str],
        seen_ms: int | None = None,
    ) -> tuple[WriteResult, Record]:
        """Update the keyless breaker's group entries `(group, status, version, authority)`."""
        member = self.keys.member(name, None)
        args = [
            member,
            name,
            reason,
            source,
            str(now_ms),
            str(ramp_ms),
            str(self.history_max),
            self.keys.channel,
            _optional_int_arg(seen_ms),
            str(len(open_statuses)),
            *sorted(open_statuses),
            str(len(entries)),
        ]
        for group, status, version, authority in entries:
            args += [group, status, _optional_int_arg(version), authority]
        keys = [
            self.keys.record(member),
            self.keys.history(member),
            self.keys.index,
            self.keys.groups(member),
        ]
        with translate_errors(f"apply monitor groups to breaker {member}"):
            reply = self._groups(keys=keys, args=args)
        return _result(member, cast(list[Any], reply))

    def prune(
        self, *, now_ms: int, idle_ms: int, batch: int = PRUNE_BATCH
    ) -> tuple[int, list[tuple[str, int]]]:
        """One prune step (see `lua.PRUNE`): how many breakers it looked at, and which it deleted
        with the revision of their tombstones."""
        member_prefixes = list(self.keys.member_keys(""))
        args = [str(now_ms - idle_ms), str(now_ms), str(batch), self.keys.channel]
        with translate_errors("prune idle breakers"):
            examined, flat = self._prune(keys=[self.keys.index], args=args + member_prefixes)
        pruned = cast(list[str], flat)
        return int(examined), [
            (member, int(rev)) for member, rev in zip(pruned[::2], pruned[1::2], strict=True)
        ]

    def add_shadow(self, counts: Sequence[tuple[str, int, int]]) -> None:
        """Add `(member, minute start ms, calls)` to the breakers' shadow counts, atomically."""
        args = [self.keys.record_prefix, self.keys.shadow_prefix, str(MAX_SHADOW_BUCKETS)]
        args.append(str(len(counts)))
        for member, bucket_ms, calls in counts:
            args += [member, str(bucket_ms), str(calls)]
        with translate_errors("write shadow counts"):
            self._shadow_count(keys=[self.keys.index], args=args)

    def shadow_totals(self, members: Sequence[str]) -> dict[str, int]:
        """Each member's total of would-be refusals (members with none are left out)."""
        with translate_errors("read shadow counts"):
            pipe = self.client.pipeline(transaction=False)
            for member in members:
                pipe.hget(self.keys.shadow(member), "total")
            replies = cast(list[str | None], pipe.execute())
        return {m: int(total) for m, total in zip(members, replies, strict=True) if total}

    def shadow_buckets(self, member: str) -> dict[int, int]:
        """Would-be refusals of one breaker by minute (start in Unix ms)."""
        with translate_errors(f"read the shadow counts of breaker {member}"):
            fields = cast(dict[str, str], self.client.hgetall(self.keys.shadow(member)))
        return {int(f): int(n) for f, n in fields.items() if f != "total"}

    def read(self, name: str, key: str | None) -> Record | None:
        member = self.keys.member(name, key)
        with translate_errors(f"read breaker {member}"):
            fields = cast(dict[str, str], self.client.hgetall(self.keys.record(member)))
        return Record.from_hash(member, fields) if fields else None

    def read_member(self, member: str) -> Record | None:
        name, key = self.keys.split_member(member)
        return self.read(name, key)

    def read_all(self) -> list[Record]:
        """Every breaker record, in two round trips (the index, then one pipelined read)."""
        with translate_errors("read all breakers"):
            members = sorted(cast(set[str], self.client.smembers(self.keys.index)))
            pipe = self.client.pipeline(transaction=False)
            for member in members:
                pipe.hgetall(self.keys.record(member))
            replies = cast(list[dict[str, str]], pipe.execute())
        return [
            Record.from_hash(member, fields)
            for member, fields in zip(members, replies, strict=True)
            if fields
        ]

    def revision(self) -> int:
        """The newest revision any breaker write took (0 for a Redis that never saw one)."""
        with translate_errors("read the breakers' revision"):
            return int(cast(str | None, self.client.get(self.keys.revision)) or 0)

    def scan_index(self, cursor: int, count: int) -> tuple[int, list[str]]:
        """One SSCAN page of the index (a member may come twice; 0 is the last cursor)."""
        with translate_errors("list breakers"):
            cursor, members = self.client.sscan(self.keys.index, cursor, count=count)
        return int(cursor), cast(list[str], members)

    def changed_since(self, revision: int, count: int) -> tuple[int, list[tuple[str, int]]]:
        """The revision counter, and up to `count` members whose last write or prune is newer
        than `revision`, oldest first, each with that revision."""
        with translate_errors("read changed breakers"):
            pipe = self.client.pipeline(transaction=True)
            pipe.get(self.keys.revision)
            pipe.zrangebyscore(
                self.keys.revisions, f"({revision}", "+inf", start=0, num=count, withscores=True
            )
            counter, changed = pipe.execute()
        pairs = cast(list[tuple[str, float]], changed)
        return int(counter or 0), [(member, int(score)) for member, score in pairs]

    def read_rows(
        self,
        members: Sequence[str],
        share: Callable[[str], str] | None = None,
        *,
        age: bool = False,
    ) -> Iterator[tuple[str, RecordRow | None]]:
        """Each member's record as a row (None: it has none), read in one round trip now and
        parsed row by row as the result is iterated, so a caller can let other threads run
        between two rows. With `age`, a record that has no last-write time yet (written before
        there was one) gets its own `updated_ms`, so a prune can find it."""
        if not members:
            return iter(())
        with translate_errors("read breakers"):
            keys = [self.keys.record(member) for member in members]
            if age:
                keys.append(self.keys.written)
            replies = self._read(keys=keys, args=["1" if age else "0", *members])
        return (
            (member, row_from_hash(member, _fields(packed), share) if packed else None)
            for member, packed in zip(members, replies, strict=True)
        )

    def tombstone(self, member: str) -> int | None:
        """The revision at which a pruned member was deleted (None: none is known)."""
        with translate_errors(f"read breaker {member}"):
            score = self.client.zscore(self.keys.revisions, member)
        return None if score is None else int(score)

    def history(self, name: str, key: str | None, limit: int) -> list[HistoryEntry]:
        member = self.keys.member(name, key)
        with translate_errors(f"read the history of breaker {member}"):
            entries = cast(
                list[tuple[str, dict[str, str]]],
                self.client.xrevrange(self.keys.history(member), count=limit),
            )
        return [HistoryEntry.from_stream(entry_id, fields) for entry_id, fields in entries]

    def delivery_seen(self, webhook_id: str) -> bool:
        with translate_errors(f"check callback delivery {webhook_id}"):
            return bool(self.client.exists(self.keys.delivery_seen(webhook_id)))

    def mark_delivery_seen(self, webhook_id: str, ttl_s: float) -> None:
        with translate_errors(f"mark callback delivery {webhook_id}"):
            self.client.set(self.keys.delivery_seen(webhook_id), "1", px=max(1, int(ttl_s * 1000)))


def _result(member: str, reply: Sequence[Any]) -> tuple[WriteResult, Record]:
    outcome, old, new, flat = reply
    record = Record.from_flat(member, cast(list[str], flat))
    newer_source = None
    if outcome == "stale":
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        newer_source = fields.get("version_source") or record.source
    result = WriteResult(
        name=record.name,
        key=record.key,
        outcome=cast(Outcome, outcome),
        old_state=cast(State, old),
        new_state=cast(State, new),
        version=record.version,
        forced=str(new).startswith("forced_"),
        newer_source=newer_source,
    )
    return result, record


def _optional_int_arg(value: int | None) -> str:
    """Lua gets strings: an absent version or expiry is the empty string."""
    return "" if value is None else str(value)


def _fields(packed: str) -> dict[str, str]:
    """A record's fields from READ's JSON array of names and values."""
    flat = json.loads(packed)
    return dict(zip(flat[::2], flat[1::2], strict=True))
