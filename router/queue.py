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
a duplicate attempt, never a lost delivery. Whatever a worker does with a claim is applied only
while the claim is still its own and the delivery not final (`_SETTLE`): a slow worker's late
result is kept in the history and changes nothing else. `docs/operations.md` walks through
each failure path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import redis
from redis.commands.core import Script

from router.errors import QueueUnavailable
from router.keys import RouterKeys
from router.model import Notification
from router.redis_conn import on_the_node_of

log = logging.getLogger(__name__)

Status = Literal["queued", "retrying", "delivered", "dead"]

# The dashboard lists this many of the latest deliveries; older records stay loadable by id
# (and dead letters in their own stream) until their retention ends.
RECENT_DELIVERIES_MAX = 1000

# Each script that changes a delivery's status notes it in the recent index, capped as it goes.
_RECENT = f"""
local function note_recent(index, id, ms)
  redis.call('ZADD', index, ms, id)
  redis.call('ZREMRANGEBYRANK', index, 0, -{RECENT_DELIVERIES_MAX + 1})
end
"""

# One call stores a whole batch of notifications (the web gathers concurrent requests into
# one, see `router.batching`): one round trip to Redis per batch, not per request. A
# notification's count in the inbound metrics hash is made here too, when it is asked for, so a
# request costs no second round trip.
_ENQUEUE = (
    _RECENT
    + """
-- KEYS[1]=stream, KEYS[2]=stats, KEYS[3]=recent index, KEYS[4]=inbound metrics hash,
-- KEYS[4+i]=record of delivery i (over all notifications, in order)
-- ARGV[1]=now_ms, then per notification: its json, its delivery count c, the metrics field
-- to count it under if any delivery is new ('' = none), the field if all are duplicates,
-- then c pairs of delivery id, url
local now, created, key, at = ARGV[1], {}, 4, 2
while at <= #ARGV do
  local notification, count = ARGV[at], tonumber(ARGV[at + 1])
  local queued_field, duplicate_field = ARGV[at + 2], ARGV[at + 3]
  local any_new = false
  at = at + 4
  for _ = 1, count do
    key = key + 1
    local id, url = ARGV[at], ARGV[at + 1]
    at = at + 2
    if redis.call('EXISTS', KEYS[key]) == 0 then
      redis.call('HSET', KEYS[key], 'id', id, 'url', url, 'notification', notification,
        'status', 'queued', 'created_ms', now, 'updated_ms', now,
        'attempts', '[]', 'attempt_count', '0', 'round_start', '0', 'reclaims', '0',
        'replays', '0')
      redis.call('XADD', KEYS[1], '*', 'id', id)
      redis.call('HINCRBY', KEYS[2], 'accepted', 1)
      note_recent(KEYS[3], id, now)
      created[#created + 1] = 1
      any_new = true
    else
      redis.call('HINCRBY', KEYS[2], 'duplicates', 1)
      created[#created + 1] = 0
    end
  end
  local counted = any_new and queued_field or duplicate_field
  if counted ~= '' then redis.call('HINCRBY', KEYS[4], counted, 1) end
end
return created
"""
)

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

# A replay starts a fresh round: attempts and reclaims count from zero again (a delivery
# parked as poison would otherwise be parked again at once), while id and history stay.
_REPLAY = (
    _RECENT
    + """
-- KEYS[1]=record, KEYS[2]=stream, KEYS[3]=dead stream, KEYS[4]=stats, KEYS[5]=recent index
-- ARGV[1]=now_ms
if redis.call('HGET', KEYS[1], 'status') ~= 'dead' then return 0 end
local dead_entry = redis.call('HGET', KEYS[1], 'dead_entry')
if dead_entry then redis.call('XDEL', KEYS[3], dead_entry) end
redis.call('HSET', KEYS[1], 'status', 'queued', 'updated_ms', ARGV[1],
  'round_start', redis.call('HGET', KEYS[1], 'attempt_count'), 'reclaims', '0', 'reason', '',
  'dead_entry', '')
redis.call('HINCRBY', KEYS[1], 'replays', 1)
redis.call('PERSIST', KEYS[1])
redis.call('XADD', KEYS[2], '*', 'id', redis.call('HGET', KEYS[1], 'id'))
redis.call('HINCRBY', KEYS[4], 'replayed', 1)
note_recent(KEYS[5], redis.call('HGET', KEYS[1], 'id'), ARGV[1])
return 1
"""
)

# Checked and deleted in one step, so a replay landing in between cannot be lost.
_PURGE = """
-- KEYS[1]=record, KEYS[2]=dead stream, KEYS[3]=recent index; ARGV[1]=delivery id
if redis.call('HGET', KEYS[1], 'status') ~= 'dead' then return 0 end
local dead_entry = redis.call('HGET', KEYS[1], 'dead_entry')
if dead_entry and dead_entry ~= '' then redis.call('XDEL', KEYS[2], dead_entry) end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""

# Counted only on records that exist: a count on a purged record would recreate it as a
# half-record that can never be loaded.
_COUNT_RECLAIMS = """
-- KEYS = records of the reclaimed deliveries, then KEYS[#KEYS] = stats
for i = 1, #KEYS - 1 do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('HINCRBY', KEYS[i], 'reclaims', 1) end
end
redis.call('HINCRBY', KEYS[#KEYS], 'reclaimed', #KEYS - 1)
"""

# Shared by the scripts that act on a claim: is the entry still pending, and held by us?
# A worker whose claim was taken over (it was too slow) or settled by another must not act.
_HOLDS = """
local function holds(stream, group, entry, consumer)
  local pending = redis.call('XPENDING', stream, group, entry, entry, 1)
  return pending[1] ~= nil and pending[1][2] == consumer
end
local function release(stream, group, entry)
  redis.call('XACK', stream, group, entry)
  redis.call('XDEL', stream, entry)
end
"""

# Every consequence of a claim (delivered, retry, dead letter, deferral, nothing to do) is this
# one script, so each checks atomically that the record exists, is not final, and that the
# claim is still the current one. A late result is kept in the attempt history, nothing more.
_SETTLE = (
    _HOLDS
    + _RECENT
    + """
-- KEYS[1]=record, KEYS[2]=stream, KEYS[3]=delayed zset, KEYS[4]=dead stream, KEYS[5]=stats,
-- KEYS[6]=recent index
-- ARGV[1]=what (delivered|retrying|dead|defer|drop), ARGV[2]=entry id, ARGV[3]=consumer,
-- ARGV[4]=group, ARGV[5]=now_ms, ARGV[6]=attempt json ('' = none), ARGV[7]=the same attempt
-- marked late, ARGV[8]=due_ms, ARGV[9]=reason, ARGV[10]=retention_ms, ARGV[11]=delivery id
local what, entry, consumer, group = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ours = holds(KEYS[2], group, entry, consumer)
if redis.call('HEXISTS', KEYS[1], 'notification') == 0 then
  -- Purged by a person, lost with Redis's data, or a half-record of an older version:
  -- there is nothing left to deliver, so the entry is dropped, never retried for ever.
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[6], ARGV[11])
  if ours then release(KEYS[2], group, entry) end
  redis.call('HINCRBY', KEYS[5], 'missing_records', 1)
  return 'missing'
end
local status = redis.call('HGET', KEYS[1], 'status')
local final = status == 'delivered' or status == 'dead'

local function append(attempt)
  if attempt == '' then return end
  local attempts = redis.call('HGET', KEYS[1], 'attempts') or '[]'
  if attempts == '[]' then attempts = '[' .. attempt .. ']'
  else attempts = string.sub(attempts, 1, -2) .. ',' .. attempt .. ']' end
  redis.call('HSET', KEYS[1], 'attempts', attempts)
  redis.call('HINCRBY', KEYS[1], 'attempt_count', 1)
end

if what == 'drop' or not ours or final then
  if ARGV[6] ~= '' then
    append(ARGV[7])
    redis.call('HINCRBY', KEYS[5], 'late_results', 1)
  end
  -- An entry of ours for a delivery already final needs no work; one of another's is theirs.
  if ours and (final or what == 'drop') then release(KEYS[2], group, entry) end
  if what == 'drop' and ours then return 'done' end
  return 'late'
end

append(ARGV[6])
local now = ARGV[5]
if what == 'delivered' then
  redis.call('HSET', KEYS[1], 'status', 'delivered', 'updated_ms', now, 'next_attempt_ms', '')
  redis.call('PEXPIRE', KEYS[1], ARGV[10])
  redis.call('HINCRBY', KEYS[5], 'delivered', 1)
elseif what == 'retrying' then
  redis.call('HSET', KEYS[1], 'status', 'retrying', 'updated_ms', now, 'next_attempt_ms', ARGV[8])
  redis.call('ZADD', KEYS[3], ARGV[8], ARGV[11])
  redis.call('HINCRBY', KEYS[5], 'retries_scheduled', 1)
elseif what == 'defer' then
  redis.call('ZADD', KEYS[3], ARGV[8], ARGV[11])
  redis.call('HINCRBY', KEYS[5], 'deferred', 1)
elseif what == 'dead' then
  local dead_entry = redis.call('XADD', KEYS[4], '*', 'id', ARGV[11],
    'url', redis.call('HGET', KEYS[1], 'url'), 'reason', ARGV[9], 'at_ms', now)
  redis.call('HSET', KEYS[1], 'status', 'dead', 'reason', ARGV[9], 'updated_ms', now,
    'next_attempt_ms', '', 'dead_entry', dead_entry)
  redis.call('PERSIST', KEYS[1])
  redis.call('HINCRBY', KEYS[5], 'dead', 1)
else
  return redis.error_reply('unknown settle ' .. what)
end
if what ~= 'defer' then note_recent(KEYS[6], ARGV[11], now) end
release(KEYS[2], group, entry)
return 'done'
"""
)

# Before an attempt starts: still ours? Then reset the entry's idle time, so the time spent
# enriching and waiting for the endpoint does not count towards ROUTER_CLAIM_IDLE.
_REFRESH = (
    _HOLDS
    + """
-- KEYS[1]=stream; ARGV[1]=group, ARGV[2]=consumer, ARGV[3]=entry id
if not holds(KEYS[1], ARGV[1], ARGV[3], ARGV[2]) then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
"""
)

Settled = Literal["done", "late", "missing"]

# Without these a record cannot be delivered: it reads as missing.
_REQUIRED_FIELDS = ("id", "url", "notification", "status", "created_ms", "updated_ms")


def delivery_id_for(dedup_key: str, url: str) -> str:
    """Stable id of the delivery of one notification to one URL (the `webhook-id`)."""
    digest = hashlib.sha256(f"{dedup_key}\n{url}".encode()).hexdigest()
    return f"dlv_{digest[:26]}"


def now_ms() -> int:
    return int(time.time() * 1000)


class OneTrip:
    """Commands and script calls sent to Redis in one round trip (a non-transactional
    pipeline), each answered on its own: one that fails does not fail the others.

    Scripts go by their SHA alone (`EVALSHA`): a redis-py script in a pipeline costs a
    `SCRIPT EXISTS` round trip of its own on every execute. One Redis no longer knows (it
    restarted, or its scripts were flushed) did not run, and is run again through its
    `Script`, which loads it."""

    def __init__(self, client: redis.Redis) -> None:
        self.pipe = client.pipeline(transaction=False)
        self._scripts: list[tuple[int, Script, list[str], list[Any]]] = []

    def script(self, script: Script, keys: list[str], args: list[Any]) -> int:
        """Queue a call of a registered script; returns the index of its answer."""
        self.pipe.evalsha(script.sha, len(keys), *keys, *args)
        index = len(self.pipe) - 1
        self._scripts.append((index, script, keys, args))
        return index

    def execute(self) -> list[Any]:
        """Every answer in order; an answer that is an error is the exception, not raised.
        A lost connection raises (nothing says what Redis did with the commands)."""
        answers = list(self.pipe.execute(raise_on_error=False))
        for index, script, keys, args in self._scripts:
            if isinstance(answers[index], redis.exceptions.NoScriptError):
                answers[index] = script(keys=keys, args=args)
        return answers


# Writes sent along with a claim's settle, in the same round trip (the told record, metrics).
AlsoWrite = Callable[[OneTrip], None]


@dataclass(frozen=True)
class Counted:
    """The inbound metrics fields an enqueued notification is counted under: `queued` when any
    of its deliveries is new, `duplicate` when a sender sent them all before ('' = not counted)."""

    queued: str
    duplicate: str


@dataclass(frozen=True)
class Enqueued:
    delivery_id: str
    url: str
    created: bool


@dataclass(frozen=True)
class Claim:
    """A stream entry a worker holds; it stays pending until acknowledged.

    `consumer` is who holds it: a claim another worker took over is no longer current, and
    nothing done under it changes the delivery (see `_SETTLE`)."""

    entry_id: str
    delivery_id: str
    consumer: str


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
    def from_hash(cls, data: dict[str, str]) -> Delivery | None:
        """The delivery, or None for a half-record (an older version could leave one)."""
        if not all(data.get(name) for name in _REQUIRED_FIELDS):
            return None
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
        wait_replicas: int = 0,
        wait_timeout_s: float = 1.0,
    ) -> None:
        self.redis = client
        self.keys = keys
        self.retention_ms = int(retention_s * 1000)
        # ROUTER_REDIS_WAIT_REPLICAS: an enqueue is acknowledged only once this many replicas
        # hold it, so a failover to one of them cannot lose it.
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = max(1, int(wait_timeout_s * 1000))
        self._clock = clock
        self._enqueue = client.register_script(_ENQUEUE)
        self._move_due = client.register_script(_MOVE_DUE)
        self._replay = client.register_script(_REPLAY)
        self._purge = client.register_script(_PURGE)
        self._count_reclaims = client.register_script(_COUNT_RECLAIMS)
        self._settle = client.register_script(_SETTLE)
        self._refresh = client.register_script(_REFRESH)

    # -- producer side -------------------------------------------------------------------

    def enqueue(self, notification: Notification) -> list[Enqueued]:
        """Store one delivery per callback URL; an already-known delivery is not added again."""
        [enqueued] = self.enqueue_many([notification])
        return enqueued

    def enqueue_many(
        self, notifications: Sequence[Notification], *, counted: Sequence[Counted] = ()
    ) -> list[list[Enqueued]]:
        """`enqueue` for each notification, in one script call: all stored, or an exception.

        `counted`, when given, has one entry per notification: the fields of the inbound
        metrics hash (`RouterKeys.notifications_received`) each is counted under.
        """
        if counted and len(counted) != len(notifications):
            raise ValueError("counted needs one entry per notification")
        keys = [
            self.keys.stream,
            self.keys.stats,
            self.keys.recent_deliveries,
            self.keys.notifications_received,
        ]
        args: list[str | int] = [self._clock()]
        planned: list[list[tuple[str, str]]] = []
        for index, notification in enumerate(notifications):
            deliveries = [
                (delivery_id_for(notification.dedup_key, url), url)
                for url in notification.callback_urls
            ]
            planned.append(deliveries)
            if not deliveries:
                continue  # nothing to store: the caller answers that itself
            fields = counted[index] if counted else Counted("", "")
            args += [notification.to_json(), len(deliveries), fields.queued, fields.duplicate]
            for delivery_id, url in deliveries:
                keys.append(self.keys.delivery(delivery_id))
                args += [delivery_id, url]
        if len(args) == 1:
            created: Iterator[int] = iter(())
        elif self.wait_replicas:
            created = iter(self._enqueue_replicated(keys, args))
        else:
            created = iter(self._enqueue(keys=keys, args=args))
        return [
            [Enqueued(delivery_id, url, bool(next(created))) for delivery_id, url in deliveries]
            for deliveries in planned
        ]

    def _enqueue_replicated(self, keys: list[str], args: list[str | int]) -> Any:
        """The enqueue script, then WAIT on the same connection (WAIT counts the replicas that
        have this connection's writes). The script always writes (a duplicate bumps a counter),
        so a sender's retry also waits for what an earlier, unconfirmed attempt stored."""
        with on_the_node_of(self.redis, keys[0]) as node:
            pipe = node.pipeline(transaction=False)
            self._enqueue(keys=keys, args=args, client=pipe)
            pipe.wait(self.wait_replicas, self.wait_timeout_ms)
            created, confirmed = pipe.execute()
        if int(confirmed) < self.wait_replicas:
            raise QueueUnavailable(
                f"Redis stored the notification but only {confirmed} of "
                f"{self.wait_replicas} replicas (ROUTER_REDIS_WAIT_REPLICAS) confirmed it "
                f"within {self.wait_timeout_ms} ms"
            )
        return created

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
            Claim(entry_id, fields["id"], consumer)
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
        claims = [Claim(entry_id, fields["id"], consumer) for entry_id, fields in entries if fields]
        if claims:
            records = [self.keys.delivery(claim.delivery_id) for claim in claims]
            self._count_reclaims(keys=[*records, self.keys.stats])
        return claims, next_cursor

    def move_due(self, batch: int = 100) -> int:
        return int(
            self._move_due(keys=[self.keys.delayed, self.keys.stream], args=[self._clock(), batch])
        )

    def load(self, delivery_id: str) -> Delivery | None:
        data = cast(dict[str, str], self.redis.hgetall(self.keys.delivery(delivery_id)))
        return Delivery.from_hash(data) if data else None

    def refresh(self, claim: Claim) -> bool:
        """Right before an attempt: False if the claim is no longer ours (do not send)."""
        args = [self.keys.group, claim.consumer, claim.entry_id]
        return bool(self._refresh(keys=[self.keys.stream], args=args))

    def ack(self, claim: Claim) -> Settled:
        """Drop an entry that needs no work (its delivery was purged or is already final)."""
        return self._settle_claim("drop", claim, claim.delivery_id)

    def complete(
        self,
        claim: Claim,
        delivery: Delivery,
        *,
        attempt: dict[str, Any] | None = None,
        also: AlsoWrite | None = None,
    ) -> Settled:
        return self._settle_claim("delivered", claim, delivery.id, attempt=attempt, also=also)

    def schedule_retry(
        self,
        claim: Claim,
        delivery: Delivery,
        due_ms: int,
        *,
        attempt: dict[str, Any] | None = None,
        also: AlsoWrite | None = None,
    ) -> Settled:
        return self._settle_claim(
            "retrying", claim, delivery.id, attempt=attempt, due_ms=due_ms, also=also
        )

    def defer(self, claim: Claim, delivery_id: str, delay_ms: int) -> Settled:
        """Put an entry back for later without counting an attempt (e.g. endpoint busy)."""
        due_ms = self._clock() + delay_ms
        return self._settle_claim("defer", claim, delivery_id, due_ms=due_ms)

    def dead_letter(
        self,
        claim: Claim,
        delivery: Delivery,
        reason: str,
        *,
        attempt: dict[str, Any] | None = None,
        also: AlsoWrite | None = None,
    ) -> Settled:
        """Park a delivery in the dead-letter stream (no TTL) until a person replays it."""
        return self._settle_claim(
            "dead", claim, delivery.id, attempt=attempt, reason=reason, also=also
        )

    def _settle_claim(
        self,
        what: str,
        claim: Claim,
        delivery_id: str,
        *,
        attempt: dict[str, Any] | None = None,
        due_ms: int = 0,
        reason: str = "",
        also: AlsoWrite | None = None,
    ) -> Settled:
        """What a claim led to, applied only if the claim is still current (see `_SETTLE`).

        `also` adds writes to the same round trip; their failure is logged, never the
        settle's (a lost connection fails them all, and the caller writes them again)."""
        keys = [
            self.keys.delivery(delivery_id),
            self.keys.stream,
            self.keys.delayed,
            self.keys.dead,
            self.keys.stats,
            self.keys.recent_deliveries,
        ]
        encoded = late = ""
        if attempt is not None:
            encoded = json.dumps(attempt, separators=(",", ":"))
            late = json.dumps({**attempt, "late": True}, separators=(",", ":"))
        args: list[str | int] = [
            what,
            claim.entry_id,
            claim.consumer,
            self.keys.group,
            self._clock(),
            encoded,
            late,
            due_ms,
            reason,
            self.retention_ms,
            delivery_id,
        ]
        if also is None:
            outcome = self._settle(keys=keys, args=args)
        else:
            trip = OneTrip(self.redis)
            settle_index = trip.script(self._settle, keys, args)
            also(trip)
            answers = trip.execute()
            outcome = answers.pop(settle_index)
            if isinstance(outcome, Exception):
                raise outcome
            for answer in answers:
                if isinstance(answer, Exception):
                    log.warning("written with the result of %s, failed: %s", delivery_id, answer)
        return cast(Settled, outcome.decode() if isinstance(outcome, bytes) else outcome)

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
        keys = [
            self.keys.delivery(delivery_id),
            self.keys.stream,
            self.keys.dead,
            self.keys.stats,
            self.keys.recent_deliveries,
        ]
        return bool(self._replay(keys=keys, args=[self._clock()]))

    def purge(self, delivery_ids: Iterable[str]) -> int:
        """Forget dead deliveries for good; returns how many were removed."""
        keys = [self.keys.dead, self.keys.recent_deliveries]
        return sum(
            int(self._purge(keys=[self.keys.delivery(delivery_id), *keys], args=[delivery_id]))
            for delivery_id in delivery_ids
        )

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

    def recent(self, limit: int) -> list[Delivery]:
        """The `limit` deliveries changed last, newest first; expired records leave the index."""
        ids = cast(list[str], self.redis.zrevrange(self.keys.recent_deliveries, 0, limit - 1))
        pipe = self.redis.pipeline(transaction=False)
        for delivery_id in ids:
            pipe.hgetall(self.keys.delivery(delivery_id))
        found, gone = [], []
        for delivery_id, data in zip(ids, pipe.execute(), strict=True):
            delivery = Delivery.from_hash(data) if data else None
            if delivery is None:
                gone.append(delivery_id)
            else:
                found.append(delivery)
        if gone:  # retention expired them (or a purge raced this read)
            self.redis.zrem(self.keys.recent_deliveries, *gone)
        return found
