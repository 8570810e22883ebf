"""The write scripts: every change to a breaker is one Lua script, so it is atomic.

A script reads the record, ignores a monitor event older than the stored version, applies the
change, appends to the breaker's capped history stream, and publishes the breaker's member on
the change channel, all in one step. The rules mirror `breaker_client.states` (tests pin that
they agree). Numbers travel as strings and are compared with `tonumber`, never re-formatted,
so millisecond times keep every digit. Runs on Redis >= 6.2 and on fakeredis[lua].
"""

from __future__ import annotations

_PRELUDE = r"""
local unpack = unpack or table.unpack
local OVERRIDE_FIELDS = {'forced', 'forced_reason', 'forced_by', 'forced_since_ms',
                         'forced_until_ms'}

local function num(s)
  if s == nil or s == '' then return nil end
  return tonumber(s)
end

local function load(k)
  local flat = redis.call('HGETALL', k)
  local h = {}
  for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
  return h
end

local function monitor_state(h, now)
  local s = h['state']
  if s == 'recovering' then
    if now >= (num(h['since_ms']) or 0) + (num(h['ramp_ms']) or 0) then return 'closed' end
    return 'recovering'
  end
  if s == 'open' then return 'open' end
  return 'closed'
end

-- `<prefix>:revision`, `:revisions` and `:written` sit beside `<prefix>:index` (see
-- router.keys.BreakerKeys), so every script that knows the index knows them.
local function sibling(index, kind)
  return string.sub(index, 1, #index - #'index') .. kind
end

-- The revision for a write: the counter's next, and above the record's own (records written
-- before revisions were global counted per record), so a newer write always has a higher one.
local function next_revision(index, h)
  local counter = sibling(index, 'revision')
  local rev = redis.call('INCR', counter)
  local held = num(h['rev'])
  if held ~= nil and rev <= held then
    rev = held + 1
    redis.call('SET', counter, tostring(rev))
  end
  return tostring(rev)
end

local function has_override(h)
  return h['forced'] ~= nil and h['forced'] ~= ''
end

local function override_active(h, now)
  if not has_override(h) then return false end
  local u = num(h['forced_until_ms'])
  return u == nil or now < u
end

local function effective(h, now)
  if override_active(h, now) then return 'forced_' .. h['forced'] end
  return monitor_state(h, now)
end

local function log_change(c, time_s, action, old, new, h, now, reason, source, by)
  redis.call('XADD', c.hist, 'MAXLEN', c.hist_max, '*',
    'time_ms', time_s, 'name', c.name, 'key', c.key, 'action', action,
    'old_state', old, 'new_state', new, 'monitor_state', monitor_state(h, now),
    'reason', reason, 'source', source, 'version', h['version'] or '',
    'forced', override_active(h, now) and '1' or '0', 'by', by or '',
    'expires_at_ms', override_active(h, now) and (h['forced_until_ms'] or '') or '')
end

-- A monitor write refused because the breaker holds a newer event: logged (not applied), with
-- the event it lost to, so "why did my alert do nothing?" has an answer in the history.
local function log_stale(c, a, h, state, now)
  local newer_source = h['version_source']
  if newer_source == nil or newer_source == '' then newer_source = h['source'] or '' end
  redis.call('XADD', c.hist, 'MAXLEN', c.hist_max, '*',
    'time_ms', a.now_s, 'name', c.name, 'key', c.key, 'action', 'stale_' .. a.action,
    'old_state', state, 'new_state', state, 'monitor_state', monitor_state(h, now),
    'reason', a.reason, 'source', a.source, 'version', a.version or '',
    'forced', override_active(h, now) and '1' or '0', 'by', '', 'expires_at_ms', '',
    'newer_version', a.newer_version or h['version'] or '', 'newer_source', newer_source)
end

-- Apply one action to one breaker. `c` carries the breaker's keys and names; `a` the action.
-- Returns {outcome, old_state, new_state, HGETALL of the record after}.
local function apply(c, a)
  local h = load(c.rec)
  local now = a.now
  -- expired: a run-out override was cleared; touched: the hash needs writing at all.
  local expired = false
  local touched = false
  local changed = false
  local monitor = (a.action == 'open' or a.action == 'close')

  local version = a.version
  if monitor then
    local v, stored = num(version), num(h['version'])
    if v ~= nil and stored ~= nil and v < stored then
      local state = effective(h, now)
      if a.note_stale then log_stale(c, a, h, state, now) end
      return {'stale', state, state, redis.call('HGETALL', c.rec)}
    end
    if v == nil then
      -- Unversioned (a person, a script): stamped now, but never behind the stored version.
      if stored ~= nil and stored > now then version = h['version'] else version = a.now_s end
    end
  end

  -- An override that ran out is cleared on the next write, and logged at the time it ended.
  if has_override(h) and not override_active(h, now) then
    local ended_s = h['forced_until_ms']
    local ended = num(ended_s)
    local before = 'forced_' .. h['forced']
    local by = h['forced_by']
    for _, f in ipairs(OVERRIDE_FIELDS) do h[f] = nil end
    redis.call('HDEL', c.rec, unpack(OVERRIDE_FIELDS))
    local after = monitor_state(h, ended)
    log_change(c, ended_s, 'override_expired', before, after, h, ended, 'override expired', '', by)
    expired = true
  end

  local old = effective(h, now)
  local set = {}
  local reason, source, by = a.reason, a.source, ''
  if monitor then
    local old_mon = monitor_state(h, now)
    local new_mon = 'closed'
    if a.action == 'open' then
      new_mon = 'open'
    elseif a.ramp_ms > 0 and (old_mon == 'open' or old_mon == 'recovering') then
      new_mon = 'recovering'
    end
    if h['version'] ~= version then
      h['version'] = version
      set[#set + 1] = 'version'; set[#set + 1] = version
      -- Which event holds the version, so a write it makes stale can say what it lost to.
      set[#set + 1] = 'version_source'; set[#set + 1] = source
      touched = true
    end
    if new_mon ~= old_mon then
      local ramp = (new_mon == 'recovering') and a.ramp_s or '0'
      h['state'], h['reason'], h['source'] = new_mon, reason, source
      h['since_ms'], h['ramp_ms'] = a.now_s, ramp
      for _, f in ipairs({'state', new_mon, 'reason', reason, 'source', source,
                          'since_ms', a.now_s, 'ramp_ms', ramp}) do set[#set + 1] = f end
      changed = true
    end
  elseif a.action == 'force_open' or a.action == 'force_closed' then
    local forced = (a.action == 'force_open') and 'open' or 'closed'
    by = a.by
    h['forced'], h['forced_reason'], h['forced_by'] = forced, reason, by
    h['forced_since_ms'], h['forced_until_ms'] = a.now_s, a.until_s
    for _, f in ipairs({'forced', forced, 'forced_reason', reason, 'forced_by', by,
                        'forced_since_ms', a.now_s, 'forced_until_ms', a.until_s}) do
      set[#set + 1] = f
    end
    source = 'person:' .. by
    changed = true
  elseif a.action == 'clear' then
    by = a.by
    source = 'person:' .. by
    if has_override(h) then
      for _, f in ipairs(OVERRIDE_FIELDS) do h[f] = nil end
      redis.call('HDEL', c.rec, unpack(OVERRIDE_FIELDS))
      changed = true
    end
  elseif a.action == 'shadow_on' or a.action == 'shadow_off' then
    -- Shadow mode only changes what `is_open` answers, never the state: old == new.
    by = a.by
    source = 'person:' .. by
    local shadowed = (h['shadow_since_ms'] or '') ~= ''
    if a.action == 'shadow_on' and not shadowed then
      h['shadow_since_ms'], h['shadow_by'] = a.now_s, by
      for _, f in ipairs({'shadow_since_ms', a.now_s, 'shadow_by', by}) do set[#set + 1] = f end
      changed = true
    elseif a.action == 'shadow_off' and shadowed then
      h['shadow_since_ms'], h['shadow_by'] = nil, nil
      redis.call('HDEL', c.rec, 'shadow_since_ms', 'shadow_by')
      changed = true
    end
  else
    return redis.error_reply('unknown breaker action ' .. tostring(a.action))
  end

  local new = effective(h, now)
  if changed or expired or touched then
    -- Idle time counts from the last write that named this breaker or changed it: a snapshot
    -- that only restamps the version of a key it does not list keeps its age (NX: a record
    -- from before this bookkeeping still gets an age).
    local named = changed or expired or not a.implicit
    local rev = next_revision(c.index, h)
    set[#set + 1] = 'rev'; set[#set + 1] = rev
    if named then set[#set + 1] = 'updated_ms'; set[#set + 1] = a.now_s end
    redis.call('HSET', c.rec, unpack(set))
    redis.call('SADD', c.index, c.member)
    redis.call('ZADD', sibling(c.index, 'revisions'), rev, c.member)
    redis.call('ZADD', sibling(c.index, 'written'), named and 'GT' or 'NX', a.now_s, c.member)
  end
  if changed then
    log_change(c, a.now_s, a.log_action or a.action, old, new, h, now, reason, source, by)
  end
  -- A newer version alone changes nothing a reader sees (it only orders later writes), so
  -- it is not broadcast: a reconcile of many unchanged keys costs no pub/sub traffic.
  if changed or expired then
    redis.call('PUBLISH', c.channel, c.member)
  end
  local outcome = changed and 'changed' or 'unchanged'
  return {outcome, old, new, redis.call('HGETALL', c.rec)}
end
"""

# KEYS: record, history, index.
# ARGV: member, name, key ('' = keyless), action, reason, source, version ('' = unversioned),
#       now_ms, ramp_ms, history_max, channel, by, until_ms ('' = no expiry).
WRITE = (
    _PRELUDE
    + r"""
local c = {rec = KEYS[1], hist = KEYS[2], index = KEYS[3], member = ARGV[1], name = ARGV[2],
           key = ARGV[3], hist_max = ARGV[10], channel = ARGV[11]}
local a = {action = ARGV[4], reason = ARGV[5], source = ARGV[6], version = ARGV[7],
           now = tonumber(ARGV[8]), now_s = ARGV[8], ramp_ms = tonumber(ARGV[9]), ramp_s = ARGV[9],
           by = ARGV[12], until_s = ARGV[13], note_stale = true}
return apply(c, a)
"""
)

# KEYS: index.
# ARGV: cutoff_ms, now_ms, batch, channel, then the prefix of every per-breaker key (the
#       record's first; `BreakerKeys.member_keys`).
# Looks at up to `batch` breakers whose last write is at or before `cutoff_ms`. One that reads
# closed with no override in force and not in shadow mode (a person's setting, which a
# prune must not undo) is deleted now (every per-breaker key, its index entry)
# and leaves a tombstone: a new revision in `revisions`, so a resync drops it too, and its
# member on the channel. One still open or set by a person is looked at again one idle time
# later. A tombstone is tidied once it is itself that old. Check and delete are one script,
# so a write is either before the prune (and the breaker is not idle) or after it (and
# recreates the breaker with a higher revision): never lost.
# Returns {examined, {member, revision, ...} pruned}.
PRUNE = (
    _PRELUDE
    + r"""
local index, cutoff, now, channel = KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[4]
local written, revisions = sibling(index, 'written'), sibling(index, 'revisions')
local rec_prefix = ARGV[5]
local candidates = redis.call('ZRANGEBYSCORE', written, '-inf', cutoff, 'LIMIT', 0, ARGV[3])
local pruned = {}
for _, member in ipairs(candidates) do
  local h = load(rec_prefix .. member)
  local updated = num(h['updated_ms'])
  if next(h) == nil then
    for i = 6, #ARGV do redis.call('DEL', ARGV[i] .. member) end
    redis.call('ZREM', written, member)
    redis.call('ZREM', revisions, member)
    redis.call('SREM', index, member)
  elseif updated ~= nil and updated > tonumber(cutoff) then
    -- Written since by something that did not note it here: its age is the record's.
    redis.call('ZADD', written, h['updated_ms'], member)
  elseif not override_active(h, now) and monitor_state(h, now) == 'closed'
      and (h['shadow_since_ms'] or '') == '' then
    local rev = next_revision(index, h)
    for i = 5, #ARGV do redis.call('DEL', ARGV[i] .. member) end
    redis.call('SREM', index, member)
    redis.call('ZADD', revisions, rev, member)
    redis.call('ZADD', written, ARGV[2], member)
    redis.call('PUBLISH', channel, member)
    pruned[#pruned + 1] = member
    pruned[#pruned + 1] = rev
  else
    redis.call('ZADD', written, ARGV[2], member)
  end
end
return {#candidates, pruned}
"""
)

# KEYS: index.
# ARGV: name, record key prefix, history key prefix, reason, source, version, now_ms, ramp_ms,
#       history_max, channel, owner, n, then n triples of (member, 'open'|'close', version).
# A listed member obeys its own version ('' = the snapshot's). The breaker's other keyed
# members already in the index are closed at the snapshot's version, but only those whose
# source starts with `owner` (e.g. 'monitor:123 '): another monitor's keys are left alone.
# Its keyless member is touched only when listed.
SNAPSHOT = (
    _PRELUDE
    + r"""
local name, rec_prefix, hist_prefix, owner = ARGV[1], ARGV[2], ARGV[3], ARGV[11]
local n = tonumber(ARGV[12])
local todo, listed = {}, {}
for i = 0, n - 1 do
  local member, action, version = ARGV[13 + 3 * i], ARGV[14 + 3 * i], ARGV[15 + 3 * i]
  if version == '' then version = ARGV[6] end
  todo[#todo + 1] = {member, action, version}
  listed[member] = true
end
local keyed = name .. ':'
for _, member in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if not listed[member] and string.sub(member, 1, #keyed) == keyed then
    local source = redis.call('HGET', rec_prefix .. member, 'source') or ''
    if owner == '' or string.sub(source, 1, #owner) == owner then
      todo[#todo + 1] = {member, 'close', ARGV[6], true}
    end
  end
end
local results = {}
for _, item in ipairs(todo) do
  local member, action, version = item[1], item[2], item[3]
  local key = ''
  if #member > #name then key = string.sub(member, #keyed + 1) end
  local c = {rec = rec_prefix .. member, hist = hist_prefix .. member, index = KEYS[1],
             member = member, name = name, key = key, hist_max = ARGV[9], channel = ARGV[10]}
  local a = {action = action, log_action = 'snapshot_' .. action, reason = ARGV[4],
             source = ARGV[5], version = version, now = tonumber(ARGV[7]), now_s = ARGV[7],
             ramp_ms = tonumber(ARGV[8]), ramp_s = ARGV[8], by = '', until_s = '',
             implicit = item[4],
             -- Only a key asserted at the event's own time is what the event was about; the
             -- others come from a read and may well be older than what is stored.
             note_stale = not item[4] and ARGV[6] ~= '' and version == ARGV[6]}
  local r = apply(c, a)
  results[#results + 1] = {member, r[1], r[2], r[3], r[4]}
end
return results
"""
)

# KEYS: record, history, index, groups.
# ARGV: member, name, reason, source, now_ms, ramp_ms, history_max, channel, seen_ms,
#       k, then k statuses that open, then n, then n quads (group, status, version, how).
# Drives a keyless breaker from one entry per monitor group, `<version> <status>`, each
# ordered by its own version: the breaker is open iff some entry's status opens it. `how`:
# 'event' (the notification about its own group) wins over an entry as new as it, 'read'
# (another group as a monitor read shows it) only over an older one, 'seen' asserts nothing
# but that the group exists. `seen_ms` ('' = not a complete read) is a time the read
# provably reflects: a stored group it does not list, last known before then, is gone and
# becomes 'Gone' at `seen_ms`, which keeps a late retry of its old events stale.
# Returns what WRITE returns; 'stale' when no entry changed.
GROUPS = (
    _PRELUDE
    + r"""
local c = {rec = KEYS[1], hist = KEYS[2], index = KEYS[3], member = ARGV[1], name = ARGV[2],
           key = '', hist_max = ARGV[7], channel = ARGV[8]}
local now_s, seen_s = ARGV[5], ARGV[9]
local opens = {}
local k = tonumber(ARGV[10])
for i = 1, k do opens[ARGV[10 + i]] = true end
local base = 11 + k
local n = tonumber(ARGV[base])

local stored = {}
local flat = redis.call('HGETALL', KEYS[4])
for i = 1, #flat, 2 do
  local v, s = string.match(flat[i + 1], '^(%S+) (.*)$')
  if v ~= nil then stored[flat[i]] = {v, s} end
end

local set, listed = {}, {}
local newest, newest_s = nil, nil
-- The notification's own group entry, when a newer one is stored: {status, version, newer}.
local lost = nil
local function put(g, v_s, status)
  set[#set + 1] = g; set[#set + 1] = v_s .. ' ' .. status
  stored[g] = {v_s, status}
  local v = tonumber(v_s)
  if newest == nil or v > newest then newest, newest_s = v, v_s end
end

for i = 0, n - 1 do
  local at = base + 1 + 4 * i
  local g, status, v_s, how = ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]
  listed[g] = true
  if v_s == '' then v_s = now_s end
  if how ~= 'seen' then
    local old = stored[g]
    local v, ov = tonumber(v_s), old and tonumber(old[1])
    if ov == nil or v > ov or (how == 'event' and v == ov) then
      put(g, v_s, status)
    elseif how == 'event' then
      lost = {status, v_s, old[1]}
    end
  end
end
if seen_s ~= '' then
  local seen = tonumber(seen_s)
  for g, e in pairs(stored) do
    if not listed[g] and e[2] ~= 'Gone' and tonumber(e[1]) < seen then put(g, seen_s, 'Gone') end
  end
end

if #set == 0 then
  local h = load(c.rec)
  local state = effective(h, tonumber(now_s))
  if lost ~= nil then
    local a = {action = opens[lost[1]] and 'open' or 'close', now_s = now_s, reason = ARGV[3],
               source = ARGV[4], version = lost[2], newer_version = lost[3]}
    log_stale(c, a, h, state, tonumber(now_s))
  end
  return {'stale', state, state, redis.call('HGETALL', c.rec)}
end
-- In slices: unpack() of a very large table overflows Lua's stack.
for i = 1, #set, 1000 do
  redis.call('HSET', KEYS[4], unpack(set, i, math.min(i + 999, #set)))
end

local action = 'close'
for _, e in pairs(stored) do
  if opens[e[2]] then action = 'open' break end
end
-- The entries order the groups' events; the record only has to accept this write, so it
-- gets the newest version it knows (its own may be newer, from a direct write).
local version = newest_s
local held = redis.call('HGET', c.rec, 'version')
if held and held ~= '' and tonumber(held) > newest then version = held end
local a = {action = action, reason = ARGV[3], source = ARGV[4], version = version,
           now = tonumber(now_s), now_s = now_s, ramp_ms = tonumber(ARGV[6]), ramp_s = ARGV[6],
           by = '', until_s = ''}
return apply(c, a)
"""
)

# KEYS: breaker records, then (when ARGV[1] is '1') the last-write zset; ARGV[2..]: their
# members. Returns one string per record: its HGETALL as a JSON array ('' when it has none):
# one string per breaker instead of two per field, parsed in C (json) rather than by the
# client's pure-Python reply parser, so reading a chunk holds the GIL a fraction as long.
# With ARGV[1] '1', a record with no last-write time yet (written before there was one)
# gets its own `updated_ms`, so a prune can find it.
READ = r"""
local n, age = #KEYS, ARGV[1] == '1'
local written = nil
if age then written = KEYS[n]; n = n - 1 end
local out = {}
for i = 1, n do
  local fields = redis.call('HGETALL', KEYS[i])
  if #fields == 0 then
    out[i] = ''
  else
    out[i] = cjson.encode(fields)
    if age and not redis.call('ZSCORE', written, ARGV[i + 1]) then
      local updated = redis.call('HGET', KEYS[i], 'updated_ms')
      if not updated or updated == '' then updated = '0' end
      redis.call('ZADD', written, 'NX', updated, ARGV[i + 1])
    end
  end
end
return out
"""

# KEYS: index.
# ARGV: record key prefix, shadow key prefix, max buckets, n, then n triples of
#       (member, bucket start ms, count).
# Adds would-be refusals to each breaker's shadow hash: `total` and the minute's bucket. A
# breaker with no record (pruned meanwhile) gets none: its hash would outlive it. Past
# `max buckets` (plus a slack, so the trim runs rarely) the oldest buckets are dropped.
SHADOW_COUNT = r"""
local rec_prefix, shadow_prefix, max_buckets = ARGV[1], ARGV[2], tonumber(ARGV[3])
local n = tonumber(ARGV[4])
for i = 0, n - 1 do
  local member, bucket, count = ARGV[5 + 3 * i], ARGV[6 + 3 * i], ARGV[7 + 3 * i]
  if redis.call('EXISTS', rec_prefix .. member) == 1 then
    local k = shadow_prefix .. member
    redis.call('HINCRBY', k, 'total', count)
    redis.call('HINCRBY', k, bucket, count)
    if redis.call('HLEN', k) > max_buckets + 100 then
      local buckets = {}
      for _, f in ipairs(redis.call('HKEYS', k)) do
        if f ~= 'total' then buckets[#buckets + 1] = tonumber(f) end
      end
      table.sort(buckets)
      for j = 1, #buckets - max_buckets do
        redis.call('HDEL', k, string.format('%d', buckets[j]))
      end
    end
  end
end
return n
"""
