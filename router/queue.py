"""The durable delivery queue on Redis.

Layout (names in `router.keys.RouterKeys`):
- a hash per delivery: the notification, callback URL, status and every attempt; the record
  is the source of truth, and its existence is what makes an enqueue idempotent;
- a stream of delivery ids ready to attempt, read by the `workers` consumer group; an entry
  stays in the group's pending list until a worker acknowledges it, so a worker killed
  mid-delivery leaves it for another to reclaim;
- a sorted set of deliveries waiting for a retry, scored by due time;
- a dead-letter stream with no TTL, from which a person replays.

Every state change is one MULTI or Lua script, ordered so that a crash can only ever cause
a duplicate attempt, never a lost delivery.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import redis

from router.keys import RouterKeys
from router.model import Notification

Status = Literal["queued", "retrying", "delivered", "dead"]

_ENQUEUE = """
-- KEYS[1]=stream, KEYS[2]=stats, KEYS[2+i]=record of delivery i
-- ARGV[1]=now_ms, ARGV[2]=notification json, ARGV[1+2i]=delivery id i, ARGV[2+2i]=url i
local created = {}
for i = 3, #KEYS do
  local n = i - 2
  local id, url = ARGV[1 + 2 * n], ARGV[2 + 2 * n]
  if redis.call('EXISTS', KEYS[i]) == 0 then
    redis.call('HSET', KEYS[i], 'id', id, 'url', url, 'notification', ARGV[2],
      'status', 'queued', 'created_ms', ARGV[1], 'updated_ms', ARGV[1],
      'attempts', '[]', 'attempt_count', '0', 'round_start', '0', 'reclaims', '0',
      'replays', '0')
    redis.call('XADD', KEYS[1], '*', 'id', id)
    redis.call('HINCRBY', KEYS[2], 'accepted', 1)
    created[n] = 1
  else
    redis.call('HINCRBY', KEYS[2], 'duplicates', 1)
    created[n] = 0
  end
end
return created
"""

# Due retries move back to the stream atomically, so two workers never both move one.
_MOVE_DUE = """
-- KEYS[1]=delayed zset, KEYS[2]=stream; ARGV[1]=now_ms, ARGV[2]=batch size
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', 'id', id)
  redis.call('ZREM', KEYS[1], id)
end
return #due
"""

_REPLAY = """
-- KEYS[1]=record, KEYS[2]=stream, KEYS[3]=dead stream, KEYS[4]=stats; ARGV[1]=now_ms
if redis.call('HGET', KEYS[1], 'status') ~= 'dead' then return 0 end
local dead_entry = redis.call('HGET', KEYS[1], 'dead_entry')
if dead_entry then redis.call('XDEL', KEYS[3], dead_entry) end
redis.call('HSET', KEYS[1], 'status', 'queued', 'updated_ms', ARGV[1],
  'round_start', redis.call('HGET', KEYS[1], 'attempt_count'), 'reason', '', 'dead_entry', '')
redis.call('HINCRBY', KEYS[1], 'replays', 1)
redis.call('PERSIST', KEYS[1])
redis.call('XADD', KEYS[2], '*', 'id', redis.call('HGET', KEYS[1], 'id'))
redis.call('HINCRBY', KEYS[4], 'replayed', 1)
return 1
"""


_DEAD_LETTER = """
-- KEYS[1]=record, KEYS[2]=dead stream, KEYS[3]=stream, KEYS[4]=stats
-- ARGV[1]=delivery id, ARGV[2]=url, ARGV[3]=reason, ARGV[4]=now_ms, ARGV[5]=entry id,
-- ARGV[6]=attempts json, ARGV[7]=attempt count, ARGV[8]=consumer group
local dead_entry = redis.call('XADD', KEYS[2], '*', 'id', ARGV[1], 'url', ARGV[2],
  'reason', ARGV[3], 'at_ms', ARGV[4])
redis.call('HSET', KEYS[1], 'status', 'dead', 'reason', ARGV[3], 'updated_ms', ARGV[4],
  'attempts', ARGV[6], 'attempt_count', ARGV[7], 'next_attempt_ms', '', 'dead_entry', dead_entry)
redis.call('PERSIST', KEYS[1])
redis.call('HINCRBY', KEYS[4], 'dead', 1)
redis.call('XACK', KEYS[3], ARGV[8], ARGV[5])
redis.call('XDEL', KEYS[3], ARGV[5])
return dead_entry
"""


def delivery_id_for(dedup_key: str, url: str) -> str:
    """Stable id of the delivery of one notification to one URL (the `webhook-id`)."""
    digest = hashlib.sha256(f"{dedup_key}\n{url}".encode()).hexdigest()
    return f"dlv_{digest[:26]}"


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Enqueued:
    delivery_id: str
    url: str
    created: bool


@dataclass(frozen=True)
class Claim:
    """A stream entry a worker holds; it stays pending until acknowledged."""

    entry_id: str
    delivery_id: str


@dataclass
class Delivery:
    id: str
    url: str
    notification: Notification
    status: Status
    created_ms: int
    updated_ms: int
    attempts: list[dict[str, Any]] = field(default_factory=list)
    # Attempts made before the latest replay; the retry schedule restarts after a replay.
    round_start: int = 0
    reclaims: int = 0
    replays: int = 0
    reason: str | None = None
    next_attempt_ms: int | None = None

    @property
    def attempts_this_round(self) -> int:
        return len(self.attempts) - self.round_start

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> Delivery:
        return cls(
            id=data["id"],
            url=data["url"],
            notification=Notification.from_dict(json.loads(data["notification"])),
            status=data["status"],  # type: ignore[arg-type]
            created_ms=int(data["created_ms"]),
            updated_ms=int(data["updated_ms"]),
            attempts=json.loads(data.get("attempts") or "[]"),
            round_start=int(data.get("round_start") or 0),
            reclaims=int(data.get("reclaims") or 0),
            replays=int(data.get("replays") or 0),
            reason=data.get("reason") or None,
            next_attempt_ms=int(data["next_attempt_ms"]) if data.get("next_attempt_ms") else None,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "status": self.status,
            "reason": self.reason,
            "created_ms": self.created_ms,
            "updated_ms": self.updated_ms,
            "next_attempt_ms": self.next_attempt_ms,
            "replays": self.replays,
            "attempts": self.attempts,
            "notification": self.notification.to_dict(),
        }


@dataclass(frozen=True)
class DeadLetter:
    entry_id: str
    delivery_id: str
    url: str
    reason: str
    dead_at_ms: int


class DeliveryQueue:
    """All queue operations; safe to share between threads (redis-py pools connections)."""

    def __init__(
        self,
        client: redis.Redis,
        keys: RouterKeys,
        *,
        retention_s: float,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.redis = client
        self.keys = keys
        self.retention_ms = int(retention_s * 1000)
        self._clock = clock
        self._enqueue = client.register_script(_ENQUEUE)
        self._move_due = client.register_script(_MOVE_DUE)
        self._replay = client.register_script(_REPLAY)
        self._dead_letter = client.register_script(_DEAD_LETTER)

    # -- producer side -------------------------------------------------------------------

    def enqueue(self, notification: Notification) -> list[Enqueued]:
        """Store one delivery per callback URL; an already-known delivery is not added again."""
        urls = list(notification.callback_urls)
        if not urls:
            return []
        ids = [delivery_id_for(notification.dedup_key, url) for url in urls]
        args: list[str | int] = [self._clock(), json.dumps(notification.to_dict())]
        for delivery_id, url in zip(ids, urls, strict=True):
            args += [delivery_id, url]
        keys = [self.keys.stream, self.keys.stats] + [self.keys.delivery(i) for i in ids]
        created = self._enqueue(keys=keys, args=args)
        return [
            Enqueued(delivery_id=i, url=u, created=bool(c))
            for i, u, c in zip(ids, urls, created, strict=True)
        ]

    # -- consumer side -------------------------------------------------------------------

    def ensure_group(self) -> None:
        try:
            self.redis.xgroup_create(self.keys.stream, self.keys.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, consumer: str, count: int, block_ms: int) -> list[Claim]:
        response = cast(
            list[tuple[str, list[tuple[str, dict[str, str]]]]] | None,
            self.redis.xreadgroup(
                self.keys.group, consumer, {self.keys.stream: ">"}, count=count, block=block_ms
            ),
        )
        return [
            Claim(entry_id, fields["id"])
            for _stream, entries in response or []
            for entry_id, fields in entries
        ]

    def reclaim(
        self, consumer: str, min_idle_ms: int, count: int, cursor: str = "0-0"
    ) -> tuple[list[Claim], str]:
        """Take over entries another worker held for longer than `min_idle_ms` (it died).

        XAUTOCLAIM scans a bounded stretch of the pending list per call: pass the returned
        cursor back next time, so entries behind many healthy in-flight ones are reached too.
        """
        answer = self.redis.xautoclaim(
            self.keys.stream, self.keys.group, consumer, min_idle_ms, cursor, count=count
        )
        next_cursor = str(answer[0])
        entries = cast(list[tuple[str, dict[str, str] | None]], answer[1])
        claims = [Claim(entry_id, fields["id"]) for entry_id, fields in entries if fields]
        if claims:
            pipe = self.redis.pipeline(transaction=False)
            for claim in claims:
                pipe.hincrby(self.keys.delivery(claim.delivery_id), "reclaims", 1)
            pipe.hincrby(self.keys.stats, "reclaimed", len(claims))
            pipe.execute()
        return claims, next_cursor

    def move_due(self, batch: int = 100) -> int:
        return int(
            self._move_due(keys=[self.keys.delayed, self.keys.stream], args=[self._clock(), batch])
        )

    def load(self, delivery_id: str) -> Delivery | None:
        data = cast(dict[str, str], self.redis.hgetall(self.keys.delivery(delivery_id)))
        return Delivery.from_hash(data) if data else None

    def ack(self, claim: Claim) -> None:
        """Drop an entry that needs no work (its delivery was purged or is already final)."""
        self._finish(self.redis.pipeline(transaction=True), claim)

    def _finish(self, pipe: Any, claim: Claim) -> None:
        """Acknowledge and delete the stream entry, with whatever `pipe` already holds."""
        pipe.xack(self.keys.stream, self.keys.group, claim.entry_id)
        pipe.xdel(self.keys.stream, claim.entry_id)
        pipe.execute()

    def _record(
        self, delivery: Delivery, status: Status, **extra: str | int
    ) -> dict[Any, Any]:  # redis-py's mapping type is invariant in its key; any str works
        now = self._clock()
        delivery.status = status
        delivery.updated_ms = now
        return {
            "status": status,
            "updated_ms": now,
            "attempts": json.dumps(delivery.attempts),
            "attempt_count": len(delivery.attempts),
            **extra,
        }

    def complete(self, claim: Claim, delivery: Delivery) -> None:
        key = self.keys.delivery(delivery.id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, mapping=self._record(delivery, "delivered", next_attempt_ms=""))
        pipe.pexpire(key, self.retention_ms)
        pipe.hincrby(self.keys.stats, "delivered", 1)
        self._finish(pipe, claim)

    def schedule_retry(self, claim: Claim, delivery: Delivery, due_ms: int) -> None:
        delivery.next_attempt_ms = due_ms
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(
            self.keys.delivery(delivery.id),
            mapping=self._record(delivery, "retrying", next_attempt_ms=due_ms),
        )
        pipe.zadd(self.keys.delayed, {delivery.id: due_ms})
        pipe.hincrby(self.keys.stats, "retries_scheduled", 1)
        self._finish(pipe, claim)

    def defer(self, claim: Claim, delivery_id: str, delay_ms: int) -> None:
        """Put an entry back for later without counting an attempt (e.g. endpoint busy)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.zadd(self.keys.delayed, {delivery_id: self._clock() + delay_ms})
        pipe.hincrby(self.keys.stats, "deferred", 1)
        self._finish(pipe, claim)

    def dead_letter(self, claim: Claim, delivery: Delivery, reason: str) -> None:
        """Park a delivery in the dead-letter stream (no TTL) until a person replays it."""
        now = self._clock()
        delivery.status, delivery.reason, delivery.updated_ms = "dead", reason, now
        self._dead_letter(
            keys=[
                self.keys.delivery(delivery.id),
                self.keys.dead,
                self.keys.stream,
                self.keys.stats,
            ],
            args=[
                delivery.id,
                delivery.url,
                reason,
                now,
                claim.entry_id,
                json.dumps(delivery.attempts),
                len(delivery.attempts),
                self.keys.group,
            ],
        )

    # -- dead letters --------------------------------------------------------------------

    def dead_letters(self, *, limit: int = 50, newest_first: bool = True) -> list[DeadLetter]:
        rows = cast(
            list[tuple[str, dict[str, str]]],
            self.redis.xrevrange(self.keys.dead, count=limit)
            if newest_first
            else self.redis.xrange(self.keys.dead, count=limit),
        )
        return [
            DeadLetter(
                entry_id=entry_id,
                delivery_id=fields["id"],
                url=fields.get("url", ""),
                reason=fields.get("reason", ""),
                dead_at_ms=int(fields.get("at_ms") or entry_id.split("-")[0]),
            )
            for entry_id, fields in rows
        ]

    def dead_count(self) -> int:
        return int(self.redis.xlen(self.keys.dead))

    def replay(self, delivery_id: str) -> bool:
        """Queue a dead delivery again under its own id; False if it is not dead."""
        keys = [self.keys.delivery(delivery_id), self.keys.stream, self.keys.dead, self.keys.stats]
        return bool(self._replay(keys=keys, args=[self._clock()]))

    def purge(self, delivery_ids: Iterable[str]) -> int:
        """Forget dead deliveries for good; returns how many were removed."""
        removed = 0
        for delivery_id in delivery_ids:
            delivery = self.load(delivery_id)
            if delivery is None or delivery.status != "dead":
                continue
            entry = self.redis.hget(self.keys.delivery(delivery_id), "dead_entry")
            pipe = self.redis.pipeline(transaction=True)
            if entry:
                pipe.xdel(self.keys.dead, entry)
            pipe.delete(self.keys.delivery(delivery_id))
            pipe.execute()
            removed += 1
        return removed

    # -- observation ---------------------------------------------------------------------

    def depths(self) -> dict[str, int]:
        """Queue depths for /metrics and the CLI."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.xlen(self.keys.stream)
        pipe.zcard(self.keys.delayed)
        pipe.xlen(self.keys.dead)
        ready, delayed, dead = pipe.execute()
        try:
            pending = int(self.redis.xpending(self.keys.stream, self.keys.group)["pending"])
        except redis.ResponseError:
            pending = 0  # no group yet: no worker has started
        return {
            "ready": int(ready) - pending,
            "in_flight": pending,
            "delayed": int(delayed),
            "dead": int(dead),
        }

    def stats(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.redis.hgetall(self.keys.stats).items()}
