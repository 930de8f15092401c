"""The only module that knows Redis key names and Lua scripts. It never imports Flask.

Every key of a statement carries the hash tag ``{<statement-id>}`` so that a Redis
Cluster keeps them in one slot and a single Lua script can touch them all::

    us:{id}:count        string   live endorsements (struck ones excluded)
    us:{id}:seen         hash     email HMAC -> stream entry id (dedup)
    us:{id}:log          stream   the record of truth: one entry per endorsement
    us:{id}:by_source    hash     allied origin -> live endorsements
    us:{id}:by_country   hash     ISO country -> live endorsements
    us:{id}:tl:m|h|d     hash     bucket start (epoch seconds) -> live endorsements
    us:{id}:state        hash     operator overrides (closed=1, closed_by, closed_at)
    us:{id}:struck       hash     stream entry id -> JSON {by, at, reason}
    us:{id}:events       channel  pub/sub: the new count after each change
    us:{id}:form:<sha256>  string  a no-JS form token already used (expires with it)
    us:{id}:pow:<nonce>  string   a used proof-of-work solution, until its challenge expires
    us:{id}:rl:<tier>:<subject>:<seconds>:<window>
                         string   a rate-limit tier's count in one clock-aligned window
                                  (subjects of the client and network tiers are hashes
                                  under the day's salt)
    us:{id}:src:m:<minute start>  hash  source -> endorsements counted in that minute (by
                                  the serving host's clock), gone 10 minutes after it
    us:{id}:src:h:<hour start>    hash  source -> endorsements counted in that hour, gone
                                  26 hours after it (both read by surge detection)
    us:{id}:bulk:<bulk id>        set   entries a bulk strike struck that its undo has not
                                  yet restored
    us:{id}:bulk:<bulk id>:meta   hash  the bulk strike: by, at, reason, filters, upto,
                                  matched, struck, restored
    us:{id}:cf:<token hash>       hash  a pending endorsement (statement with email
                                  confirmation): email HMAC, name, country, source, public
                                  flag, language, text hash; gone after WIDGET_CONFIRM_TTL
    us:{id}:cft:<token hash>      string  what became of a confirmation token (see
                                  CONFIRM_LUA), 30 days longer
    us:{id}:cfi:<email HMAC>      hash  the address's pending token (t)
    us:{id}:cfm:<email HMAC>      string  a confirmation mail went to it (10 minutes)
    us:{id}:cfp                   zset  pending token hashes -> when they expire
    us:{id}:cfs                   hash  asked, confirmed, dropped

The transparency log (see ``widget/tlog``) and what links an endorsement to it::

    us:{id}:tlog         list     the log's lines in order, packed (see ``_pack``)
    us:{id}:tlog:head    hash     the sealed size, its signed checkpoint (note), the count
                                  by the log's rule at it, and when it was sealed (at)
    us:{id}:tlog:status  string   two bits per sealed entry: its status at that size
    us:{id}:tree:<level> string   the tree's stored levels (every 4th), 32-byte hashes
    us:{id}:seen:<n>     hash     16-byte email HMAC -> 1, in 1024 buckets (dedup)
    us:{id}:who:<n>      hash     record id -> the erasable private record: HMAC, country,
                                  name (the record entry holds only its id, ``r``)
    us:{id}:rc:<n>       hash     receipt commitment (bytes 4-16) -> "<index> <entry id>"
    us:{id}:legacy_i     hash     entry id -> log index, for entries made before the log
    us:{id}:texts        hash     SHA-256 hex -> a version of the statement's text
    us:{id}:lease:seal   string   which process seals (a short lease)

Keys of no one statement: ``us:logkey`` (the log's signing key when the service made it,
encrypted), ``us:salt:<YYYY-MM-DD>`` (the day's random salt for hashing
client addresses, gone shortly after that day ends) and ``us:blocks`` (hash: block id ->
JSON, the block list of client networks and email domains; see ``abuse.Block``: networks
are kept truncated to their prefix, or as a keyed hash for long prefixes, never as a
client's address).

Open live-count streams are counted per client, across every process, in keys of their
own slot (``{streams}``): ``us:{streams}:c:<client hash>`` (hash: process token -> open
streams) and ``us:{streams}:procs`` (hash: process token -> alive-until, epoch seconds),
so the streams of a process that died stop counting once it misses its heartbeats.

Stream entries hold ``s`` (source origin or "direct"), ``p`` ("1" when the endorser
chose to be shown), ``i`` (its index in the transparency log) and ``r`` (its private
record's id), and ``k`` ("1") when its owner confirmed it by email; entries made before
the log hold ``h`` (email HMAC), ``n`` (display name) and ``c`` (country or "") instead of
``i`` and ``r``. No raw email or IP address is ever passed to this module (the
confirmation mail's queue is ``jobs``'s).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from redis import Redis
from redis.cluster import RedisCluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .surge import BASELINE_HOURS, WINDOW_BUCKETS, Arrivals, Surge, assess
from .tlog.entries import (
    Template,
    commitment,
    endorse_template,
    moderation_template,
    sha256_hex,
)
from .tlog.tree import HASH_SIZE, Span

RedisClient = Redis | RedisCluster
EndorseStatus = Literal["counted", "duplicate", "closed", "replay", "limited", "unready", "pending"]
TIMELINE_BUCKETS: Mapping[str, int] = {"m": 60, "h": 3600, "d": 86400}
ENTRY_ID = re.compile(r"(?:0|[1-9]\d{0,19})-(?:0|[1-9]\d{0,19})")
STREAM_ID_MAX = 2**64 - 1  # each half of a Redis stream id is an unsigned 64-bit number
BULK_ID = re.compile(r"[0-9a-f]{12}")
ARRIVAL_MINUTE_TTL = 600  # seconds a minute bucket outlives its start (the window is 5 min)
ARRIVAL_HOUR_TTL = 26 * 3600  # seconds an hour bucket outlives its start (the baseline is 24 h)
SURGE_CACHE_SECONDS = 5.0  # how long one process reuses a surge assessment
BULK_BATCH = 500  # entries per atomic bulk strike or undo step
MAIL_QUIET = 600  # seconds: at most one confirmation mail per address and statement
TOKEN_AFTERLIFE = 30 * 86400  # seconds a used or expired token still answers what it was

# Pieces of Lua shared by the scripts below (each script is one atomic step; Redis runs
# no script inside another, so the shared parts are put together here).
#
# Appending to the transparency log: the next index is the list's length, the line is its
# template filled in with it (and with the target's index, for moderation entries), so
# the order of the log is the order in which these scripts ran, whatever the number of
# workers and app instances.
_TLOG = """
local function append(tlog, a, b, c, target)
  local i = redis.call('LLEN', tlog)
  if target then
    redis.call('RPUSH', tlog, a .. i .. b .. target .. c)
  else
    redis.call('RPUSH', tlog, a .. i .. b)
  end
  return i
end
"""

# Moving one logged endorsement in or out of the count, every breakdown and the timeline
# buckets of its time.
_MOVE = """
local function move(f, id, delta, count_key, by_source, by_country, tl_m, tl_h, tl_d)
  local function bump(key, field)
    if redis.call('HINCRBY', key, field, delta) <= 0 then redis.call('HDEL', key, field) end
  end
  bump(by_source, f['s'] or 'direct')
  if f['c'] and f['c'] ~= '' then bump(by_country, f['c']) end
  local sec = math.floor(tonumber(string.match(id, '^(%d+)-')) / 1000)
  bump(tl_m, tostring(sec - sec % 60))
  bump(tl_h, tostring(sec - sec % 3600))
  bump(tl_d, tostring(sec - sec % 86400))
  return redis.call('INCRBY', count_key, delta)
end
-- An entry's fields; its country comes from its private record (older entries carry
-- it themselves).
local function fields_of(row, who)
  local f = {}
  for k = 1, #row[2], 2 do f[row[2][k]] = row[2][k + 1] end
  if f['r'] and who then
    local private = redis.call('HGET', who, f['r'])
    if private then f['c'] = string.gsub(string.sub(private, 17, 18), ' ', '') end
  end
  return f
end
"""

# Refusals every endorsement meets first: the statement closed by an operator, or its log
# still being prepared (only a record made before the log needs preparing; an empty one
# opens at once). The reason, or nil.
_GATE = """
local function gate(state, log)
  local states = redis.call('HMGET', state, 'closed', 'tlog')
  if states[1] == '1' then return 'closed' end
  if states[2] ~= 'ready' then
    if redis.call('XLEN', log) > 0 then return 'unready' end
    redis.call('HSET', state, 'tlog', 'ready')
  end
  return nil
end
"""

# Whether an email HMAC has endorsed already: the binary HMAC in its dedup bucket; then,
# for endorsements made before buckets, the hex HMACs of the address (as normalised now,
# and before the current rule; ``legacy`` holds them, space-separated) in the one hash of
# those releases (whose value is the entry id).
_PRIOR = """
local function prior(seen, hmac, legacy_seen, legacy)
  if redis.call('HEXISTS', seen, hmac) == 1 then return 'known' end
  for old in string.gmatch(legacy, '%S+') do
    local id = redis.call('HGET', legacy_seen, old)
    if id then return id end
  end
  return nil
end
"""

# Rate-limit tiers: sliding-window counters on clock-aligned windows, a window's counter
# and the one before it, weighted by how much of the window has passed. They hold counts
# only, never the time of a request. ``tier_windows`` checks every window without
# consuming any (window w's keys are KEYS[key0 + 2w] and the one after, its arguments
# ARGV[arg0 + 4w] to ARGV[arg0 + 4w + 3]: amount, seconds, tier name, whether a
# duplicate uses it up); it answers the windows, or nil, the tier that refused and the
# seconds to wait. ``consume`` counts one in every window (or in those a duplicate uses).
_TIERS = """
local function tier_windows(now_ms, n_windows, key0, arg0)
  local windows = {}
  if n_windows == 0 then return windows end
  local counts = redis.call('MGET', unpack(KEYS, key0, key0 + n_windows * 2 - 1))
  for w = 0, n_windows - 1 do
    local a = arg0 + w * 4
    local amount, span = tonumber(ARGV[a]), tonumber(ARGV[a + 1]) * 1000
    local index = math.floor(now_ms / span)
    local cur = KEYS[key0 + w * 2]
    local c = tonumber(counts[w * 2 + 1] or '0')
    local p = tonumber(counts[w * 2 + 2] or '0')
    local elapsed = now_ms - index * span
    -- The estimate of the last span's count: this window's, plus the previous window's
    -- share of the span that is still inside it.
    if p * (span - elapsed) / span + c + 1 > amount then
      local wait
      if c + 1 > amount then  -- until the next window has left enough of this one behind
        wait = span - elapsed + span * math.max(0, 1 - (amount - 1) / c)
      else
        wait = span * (1 - (amount - c - 1) / p) - elapsed
      end
      return nil, ARGV[a + 2], math.max(1, math.ceil(wait / 1000))
    end
    windows[#windows + 1] = {cur, (index + 2) * span / 1000, ARGV[a + 3] == '1'}
  end
  return windows
end
local function consume(windows, all)
  for _, w in ipairs(windows) do
    -- A window's key expires at the same time whoever counts in it: set it once.
    if (all or w[3]) and redis.call('INCR', w[1]) == 1 then
      redis.call('EXPIREAT', w[1], w[2])
    end
  end
end
"""

# Counting one endorsement, once it is decided that it counts: append it to the record
# under an id that carries only the minute (``k`` marks one its owner confirmed by email),
# and to the transparency log; keep its receipt commitment, its email HMAC for dedup and
# its private record; bump the count, breakdowns, timelines and the arrival buckets of
# surge detection; publish the new count. ``k`` holds the key names, ``e`` the values.
_RECORD = (
    _TLOG
    + """
local function record(k, e)
  local i = redis.call('LLEN', k.tlog)
  local fields = {'s', e.source, 'p', e.public, 'i', i, 'r', e.record}
  if e.confirmed then
    fields[#fields + 1] = 'k'
    fields[#fields + 1] = '1'
  end
  -- The id: the minute and a sequence number, after the last id the stream ever gave
  -- (a withdrawn entry's id is deleted with it, but never given again). Redis 7 numbers
  -- within the minute itself; when the stream's last id is later than this minute (or on
  -- Redis 6, which cannot), the id follows that last one.
  local id = redis.pcall('XADD', k.log, e.minute_ms .. '-*', unpack(fields))
  if type(id) == 'table' then
    local entry = e.minute_ms .. '-0'
    if redis.call('EXISTS', k.log) == 1 then
      local info = redis.call('XINFO', 'STREAM', k.log)
      for j = 1, #info, 2 do
        if info[j] == 'last-generated-id' then
          local ms, seq = string.match(info[j + 1], '^(%d+)-(%d+)$')
          if tonumber(ms) >= e.minute_ms then entry = ms .. '-' .. (tonumber(seq) + 1) end
        end
      end
    end
    id = redis.call('XADD', k.log, entry, unpack(fields))
  end
  append(k.tlog, e.head, e.tail)
  redis.call('HSET', k.commits, e.commit, i .. ' ' .. id)
  redis.call('HSET', k.seen, e.hmac, '1')
  redis.call('HSET', k.who, e.record, e.private)
  local count = redis.call('INCR', k.count)
  redis.call('HINCRBY', k.by_source, e.source, 1)
  if e.country ~= '' then redis.call('HINCRBY', k.by_country, e.country, 1) end
  local sec = math.floor(tonumber(string.match(id, '^(%d+)-')) / 1000)
  redis.call('HINCRBY', k.tl_m, sec - sec % 60, 1)
  redis.call('HINCRBY', k.tl_h, sec - sec % 3600, 1)
  redis.call('HINCRBY', k.tl_d, sec - sec % 86400, 1)
  -- Arrivals per source for surge detection: a minute and an hour bucket.
  for j = 1, 2 do
    redis.call('HINCRBY', k.arrivals[j], e.source, 1)
    redis.call('EXPIREAT', k.arrivals[j], e.arrivals_until[j])
  end
  redis.call('PUBLISH', e.channel, count)
  return count, id
end
"""
)

# One atomic step for an endorsement:
#   refuse when closed, or while the statement's log is being prepared; refuse a
#   proof-of-work solution used before (unless this is the same person again: a retry
#   after a lost answer is a duplicate, not an error); check every rate-limit tier without
#   consuming any; mark the solution used; dedup on the email HMAC (and the HMAC of the
#   address as normalised before the current rule); record it (see _RECORD); consume
#   every tier (a duplicate: the address tiers only).
ENDORSE_LUA = (
    _GATE
    + _PRIOR
    + _TIERS
    + _RECORD
    + """
local count_key, seen, log = KEYS[1], KEYS[2], KEYS[3]
local by_source, by_country = KEYS[4], KEYS[5]
local tl_m, tl_h, tl_d, state, pow_key = KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local tlog, commits, who, legacy_seen = KEYS[11], KEYS[12], KEYS[13], KEYS[14]
local hmac, legacy, record_id, private = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local country, source, public, channel = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local pow_ttl, now_ms, minute_ms = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local head, tail, commit = ARGV[12], ARGV[13], ARGV[14]
local n_windows = tonumber(ARGV[15])
local current = tonumber(redis.call('GET', count_key) or '0')
local refused = gate(state, log)
if refused then return {refused, current, '', 0} end
if pow_ttl > 0 and redis.call('EXISTS', pow_key) == 1 then
  local id = prior(seen, hmac, legacy_seen, legacy)
  if id then return {'duplicate', current, id, 0} end
  return {'replay', current, '', 0}
end
local windows, tier, wait = tier_windows(now_ms, n_windows, 15, 16)
if not windows then return {'limited', current, tier, wait} end
if pow_ttl > 0 then redis.call('SET', pow_key, '1', 'EX', pow_ttl) end
local id = prior(seen, hmac, legacy_seen, legacy)
if id then
  consume(windows, false)
  return {'duplicate', current, id, 0}
end
consume(windows, true)
-- The arrival buckets are last in KEYS, their expiry times last in ARGV.
local arrivals = 15 + n_windows * 2
local count
count, id = record(
  {count = count_key, seen = seen, log = log, by_source = by_source,
   by_country = by_country, tl_m = tl_m, tl_h = tl_h, tl_d = tl_d, tlog = tlog,
   commits = commits, who = who, arrivals = {KEYS[arrivals], KEYS[arrivals + 1]}},
  {hmac = hmac, record = record_id, private = private, country = country,
   source = source, public = public, channel = channel, minute_ms = minute_ms,
   head = head, tail = tail, commit = commit,
   arrivals_until = {ARGV[16 + n_windows * 4], ARGV[17 + n_windows * 4]}})
return {'counted', count, id, 0}
"""
)

# Email confirmation (a statement with ``confirm = "email"``). Keys of its own, all in the
# statement's slot: ``cf:<token hash>`` the pending endorsement (a hash, gone after the
# confirmation TTL), ``cft:<token hash>`` what became of that token (``p`` issued, ``u``
# used, ``d`` used by an address that had endorsed meanwhile, ``s`` replaced by a newer
# email, ``x`` dropped when its mail could not be sent; then ``:`` and the endorser's
# language), kept a while longer so that a late click gets a clear answer;
# ``cfi:<email HMAC>`` the live pending token of an address, ``cfm:<email HMAC>`` set for
# 10 minutes after a mail to it was queued; ``cfp`` (sorted set: token hash -> expiry) the
# pending ones, ``cfs`` counters (asked, confirmed, dropped).
#
# Re-marks a token's state, keeping the language after it.
_MARK = """
local function mark(key, state)
  local v = redis.call('GET', key)
  if v then redis.call('SET', key, state .. string.sub(v, 2), 'KEEPTTL') end
end
"""

# One atomic step for an endorsement of a confirming statement, through the same gate,
# proof-of-work and tier checks as ENDORSE_LUA (a retry with a solution this address used
# is answered again, quietly; every tier is consumed whatever the address, so the quotas
# say nothing about it either). Then: the address has endorsed -> an "already endorsed"
# mail, unless one went out in the last 10 minutes; it has a pending endorsement -> a
# new link replaces the old (unless mailed in the last 10 minutes); else a new pending
# endorsement and a link. ``retry`` when the address's pending token is not the one read
# before the script (its record's key must be named up front): read again and retry.
PENDING_LUA = (
    _GATE
    + _PRIOR
    + _TIERS
    + _MARK
    + """
local count_key, log, state, pow_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local seen, legacy_seen, index, throttle = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local new_rec, new_tok, old_rec, old_tok = KEYS[9], KEYS[10], KEYS[11], KEYS[12]
local pending, stats = KEYS[13], KEYS[14]
local hmac, legacy, expected, token = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local pow_ttl, now_ms = tonumber(ARGV[5]), tonumber(ARGV[6])
local ttl, tomb_ttl, quiet = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local lang = ARGV[10]
local n_windows = tonumber(ARGV[16])
local current = tonumber(redis.call('GET', count_key) or '0')
local refused = gate(state, log)
if refused then return {refused, current, '', 0} end
if pow_ttl > 0 then
  local used = redis.call('GET', pow_key)
  if used then
    if used == hmac then return {'pending', current, 'none', 0} end
    return {'replay', current, '', 0}
  end
end
local windows, tier, wait = tier_windows(now_ms, n_windows, 15, 17)
if not windows then return {'limited', current, tier, wait} end
local live = redis.call('HGET', index, 't')
if (live or '') ~= expected then return {'retry', current, '', 0} end
if pow_ttl > 0 then redis.call('SET', pow_key, hmac, 'EX', pow_ttl) end
consume(windows, true)
local now_s = math.floor(now_ms / 1000)
redis.call('ZREMRANGEBYSCORE', pending, '-inf', now_s)
local function ask()
  redis.call('HSET', new_rec, 'h', hmac, 'g', legacy, 'l', lang, 'n', ARGV[11],
    'c', ARGV[12], 's', ARGV[13], 'p', ARGV[14], 'v', ARGV[15])
  redis.call('EXPIRE', new_rec, ttl)
  redis.call('SET', new_tok, 'p:' .. lang, 'EX', tomb_ttl)
  redis.call('HSET', index, 't', token)
  redis.call('EXPIRE', index, ttl)
  redis.call('ZADD', pending, now_s + ttl, token)
end
if prior(seen, hmac, legacy_seen, legacy) then
  if redis.call('SET', throttle, '1', 'NX', 'EX', quiet) then
    return {'pending', current, 'already', 0}
  end
  return {'pending', current, 'none', 0}
end
if live and redis.call('EXISTS', old_rec) == 1 then
  if not redis.call('SET', throttle, '1', 'NX', 'EX', quiet) then
    return {'pending', current, 'none', 0}
  end
  redis.call('DEL', old_rec)
  mark(old_tok, 's')
  redis.call('ZREM', pending, live)
  ask()
  return {'pending', current, 'link', 0}
end
redis.call('SET', throttle, '1', 'EX', quiet)
ask()
redis.call('HINCRBY', stats, 'asked', 1)
return {'pending', current, 'link', 0}
"""
)

# The owner of the inbox confirms: one atomic step that uses the token up and counts the
# endorsement exactly as ENDORSE_LUA counts one (the shared _RECORD, at the minute of the
# confirmation), unless the address has endorsed meanwhile. A token no longer pending
# answers what became of it (``gone`` and its state), or ``unknown``. The same gate as
# every endorsement first: closed or unready keeps the token for later.
CONFIRM_LUA = (
    _GATE
    + _PRIOR
    + _MARK
    + _RECORD
    + """
local count_key, log, state, seen = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local legacy_seen, pend, tok, index = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local pending, stats = KEYS[9], KEYS[10]
local hmac, token, record_id, private = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local current = tonumber(redis.call('GET', count_key) or '0')
local refused = gate(state, log)
if refused then return {refused, current, ''} end
local rec = redis.call('HMGET', pend, 'h', 'g', 'c', 's', 'p')
if not rec[1] then
  local was = redis.call('GET', tok)
  if not was then return {'unknown', current, ''} end
  return {'gone', current, was}
end
if rec[1] ~= hmac then return {'retry', current, ''} end
redis.call('DEL', pend)
redis.call('ZREM', pending, token)
if redis.call('HGET', index, 't') == token then redis.call('DEL', index) end
if prior(seen, hmac, legacy_seen, rec[2] or '') then
  mark(tok, 'd')
  return {'duplicate', current, ''}
end
mark(tok, 'u')
local count, id = record(
  {count = count_key, seen = seen, log = log, by_source = KEYS[11],
   by_country = KEYS[12], tl_m = KEYS[13], tl_h = KEYS[14], tl_d = KEYS[15],
   tlog = KEYS[16], commits = KEYS[17], who = KEYS[18], arrivals = {KEYS[19], KEYS[20]}},
  {hmac = hmac, record = record_id, private = private, country = rec[3] or '',
   source = rec[4] or 'direct', public = rec[5] or '0', channel = ARGV[5],
   minute_ms = tonumber(ARGV[6]), head = ARGV[7], tail = ARGV[8], commit = ARGV[9],
   arrivals_until = {ARGV[10], ARGV[11]}, confirmed = true})
redis.call('HINCRBY', stats, 'confirmed', 1)
return {'counted', count, id}
"""
)

# A pending endorsement whose mail could not be sent: dropped (its token answers that
# it is gone), unless it was confirmed or replaced meanwhile. 1 when it was dropped.
DROP_PENDING_LUA = (
    _MARK
    + """
local pend, tok, index, pending, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
if redis.call('DEL', pend) == 0 then return 0 end
mark(tok, 'x')
if redis.call('HGET', index, 't') == ARGV[1] then redis.call('DEL', index) end
redis.call('ZREM', pending, ARGV[1])
redis.call('HINCRBY', stats, 'dropped', 1)
return 1
"""
)


# The keys every moderation script (MODERATE_LUA, WITHDRAW_LUA, the bulk ones) takes
# first, in this order; _MODERATION_KEYS names them in Lua.
MODERATION_KEYS = (
    "count",
    "log",
    "by_source",
    "by_country",
    "tl:m",
    "tl:h",
    "tl:d",
    "struck",
    "tlog",
    "legacy_i",
)
_MODERATION_KEYS = """
local count_key, log, by_source, by_country = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local tl_m, tl_h, tl_d, struck = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local tlog, legacy_i = KEYS[9], KEYS[10]
"""


# Strike or un-strike one logged endorsement atomically: the count, every breakdown and
# the timeline buckets of its time follow, the transparency log gets the entry, and the
# new count is published. Idempotent: striking a struck one changes nothing.
MODERATE_LUA = (
    _TLOG
    + _MOVE
    + _MODERATION_KEYS
    + """
local who, state = KEYS[11], KEYS[12]
local id, mode, record, channel = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local head, middle, tail = ARGV[5], ARGV[6], ARGV[7]
local current = tonumber(redis.call('GET', count_key) or '0')
if redis.call('HGET', state, 'tlog') ~= 'ready' then return {'unready', current} end
local rows = redis.call('XRANGE', log, id, id)
if #rows == 0 then return {'missing', current} end
local is_struck = redis.call('HEXISTS', struck, id) == 1
local delta
if mode == 'strike' then
  if is_struck then return {'same', current} end
  redis.call('HSET', struck, id, record)
  delta = -1
else
  if not is_struck then return {'same', current} end
  redis.call('HDEL', struck, id)
  delta = 1
end
local f = fields_of(rows[1], who)
local target = f['i'] or redis.call('HGET', legacy_i, id)
append(tlog, head, middle, tail, target)
local count = move(f, id, delta, count_key, by_source, by_country, tl_m, tl_h, tl_d)
redis.call('PUBLISH', channel, count)
return {'changed', count}
"""
)


# An endorser takes back their endorsement: out of the count (unless struck already) and
# the breakdowns, a withdraw entry in the transparency log, and the private record (name,
# country, email HMAC) erased, so the same person may endorse again. The public log
# entry stays. Idempotent.
WITHDRAW_LUA = (
    _TLOG
    + _MOVE
    + _MODERATION_KEYS
    + """
local who, seen, state = KEYS[11], KEYS[12], KEYS[13]
local id, channel, head, middle, tail = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local current = tonumber(redis.call('GET', count_key) or '0')
if redis.call('HGET', state, 'tlog') ~= 'ready' then return {'unready', current} end
local rows = redis.call('XRANGE', log, id, id)
if #rows == 0 then return {'same', current} end
local f = fields_of(rows[1], who)
local target = f['i'] or redis.call('HGET', legacy_i, id)
local count = current
if redis.call('HDEL', struck, id) == 0 then
  count = move(f, id, -1, count_key, by_source, by_country, tl_m, tl_h, tl_d)
end
if f['r'] then
  local private = redis.call('HGET', who, f['r'])
  if private then redis.call('HDEL', seen, string.sub(private, 1, 16)) end
  redis.call('HDEL', who, f['r'])
end
redis.call('XDEL', log, id)
redis.call('HDEL', legacy_i, id)
append(tlog, head, middle, tail, target)
redis.call('PUBLISH', channel, count)
return {'withdrawn', count}
"""
)


# The transparency log's preparation on upgrade: the endorsements and strikes made before
# it, as lines in their original order (several calls, under the sealing lease, while
# every writer refuses with 'unready'); the last call marks the log ready.
PREPARE_LUA = """
local tlog, legacy_i, state = KEYS[1], KEYS[2], KEYS[3]
local expected, last = tonumber(ARGV[1]), ARGV[2] == '1'
if redis.call('HGET', state, 'tlog') == 'ready' then return -1 end
if redis.call('LLEN', tlog) ~= expected then return -2 end
for k = 3, #ARGV, 2 do
  local i = redis.call('LLEN', tlog)
  redis.call('RPUSH', tlog, ARGV[k])
  if ARGV[k + 1] ~= '' then redis.call('HSET', legacy_i, ARGV[k + 1], i) end
end
if last then redis.call('HSET', state, 'tlog', 'ready') end
return redis.call('LLEN', tlog)
"""

# Sealing: append the new stored tree hashes, bring each endorsement's status and the
# count up to the new size (the log's count rule: 0 none, 1 counted, 2 struck, 3 withdrawn,
# two bits per entry), and publish the new signed checkpoint; only if nobody sealed
# meanwhile (every stored level's length is checked before anything is written).
SEAL_LUA = """
local head, status = KEYS[1], KEYS[2]
local old, new, note, n_levels = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
if tonumber(redis.call('HGET', head, 'size') or '0') ~= old then return 0 end
for k = 1, n_levels do
  if redis.call('STRLEN', KEYS[2 + k]) ~= tonumber(ARGV[4 + k]) then return 0 end
end
for k = 1, n_levels do redis.call('APPEND', KEYS[2 + k], ARGV[4 + n_levels + k]) end
local count = tonumber(redis.call('HGET', head, 'count') or '0')
local function get(i) return redis.call('BITFIELD', status, 'GET', 'u2', '#' .. i)[1] end
local function set(i, v) redis.call('BITFIELD', status, 'SET', 'u2', '#' .. i, v) end
for k = 5 + 2 * n_levels, #ARGV, 2 do
  local kind, n = ARGV[k], tonumber(ARGV[k + 1])
  if kind == 'e' then
    set(n, 1)
    count = count + 1
  else
    local was = get(n)
    if kind == 's' and was == 1 then set(n, 2); count = count - 1
    elseif kind == 'u' and was == 2 then set(n, 1); count = count + 1
    elseif kind == 'w' and was ~= 3 then
      if was == 1 then count = count - 1 end
      set(n, 3)
    end
  end
end
redis.call('HSET', head, 'size', new, 'note', note, 'count', count, 'at', redis.call('TIME')[1])
return 1
"""


# Strike a batch of logged endorsements for one bulk strike, atomically: for each id, what
# MODERATE_LUA's strike does (the same shared pieces: the record, the transparency log's
# strike entry, the count and every breakdown), skipping ids already struck, whoever
# struck them; and the id kept in the bulk's set, so that its undo restores exactly these.
# KEYS[12 + k] is the private-record bucket of ARGV[5 + k]. One publish.
BULK_STRIKE_LUA = (
    _TLOG
    + _MOVE
    + _MODERATION_KEYS
    + """
local state, members = KEYS[11], KEYS[12]
local record, channel, head, middle, tail = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local count = tonumber(redis.call('GET', count_key) or '0')
if redis.call('HGET', state, 'tlog') ~= 'ready' then return {'unready', 0, count} end
local n = 0
for k = 6, #ARGV do
  local id = ARGV[k]
  local rows = redis.call('XRANGE', log, id, id)
  if #rows > 0 and redis.call('HSETNX', struck, id, record) == 1 then
    local f = fields_of(rows[1], KEYS[7 + k])
    local target = f['i'] or redis.call('HGET', legacy_i, id)
    append(tlog, head, middle, tail, target)
    count = move(f, id, -1, count_key, by_source, by_country, tl_m, tl_h, tl_d)
    redis.call('SADD', members, id)
    n = n + 1
  end
end
if n > 0 then redis.call('PUBLISH', channel, count) end
return {'changed', n, count}
"""
)

# Undo a batch of a bulk strike atomically: each id still in the bulk's set leaves it, and
# is restored if its struck record still names this bulk (one unstruck meanwhile, or
# struck again by hand, is left as it is), as MODERATE_LUA's unstrike does. KEYS[13 + k] is
# the private-record bucket of ARGV[5 + k]. One publish.
BULK_UNDO_LUA = (
    _TLOG
    + _MOVE
    + _MODERATION_KEYS
    + """
local state, members, meta = KEYS[11], KEYS[12], KEYS[13]
local bulk, channel, head, middle, tail = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local count = tonumber(redis.call('GET', count_key) or '0')
if redis.call('HGET', state, 'tlog') ~= 'ready' then return {'unready', 0, count} end
local n = 0
for k = 6, #ARGV do
  local id = ARGV[k]
  if redis.call('SREM', members, id) == 1 then
    local ok, mark = pcall(cjson.decode, redis.call('HGET', struck, id) or '')
    local rows = redis.call('XRANGE', log, id, id)
    if ok and type(mark) == 'table' and mark['bulk'] == bulk and #rows > 0 then
      redis.call('HDEL', struck, id)
      local f = fields_of(rows[1], KEYS[8 + k])
      local target = f['i'] or redis.call('HGET', legacy_i, id)
      append(tlog, head, middle, tail, target)
      count = move(f, id, 1, count_key, by_source, by_country, tl_m, tl_h, tl_d)
      n = n + 1
    end
  end
end
redis.call('HINCRBY', meta, 'restored', n)
if n > 0 then redis.call('PUBLISH', channel, count) end
return {'changed', n, count}
"""
)

# Forget blocks whose expiry has passed (they stopped applying at that moment already).
PRUNE_BLOCKS_LUA = """
local now, removed = tonumber(ARGV[1]), 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local ok, block = pcall(cjson.decode, fields[i + 1])
  if ok and type(block) == 'table' and type(block['expires']) == 'number'
      and block['expires'] <= now then
    redis.call('HDEL', KEYS[1], fields[i])
    removed = removed + 1
  end
end
return removed
"""


# A short lease: kept by its holder (same token), taken by anyone once it lapsed.
LEASE_LUA = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


# Admit one more live-count stream for a client unless it already holds ``cap`` across
# every live process; processes that stopped renewing their alive-until are forgotten.
OPEN_STREAM_LUA = """
local client, procs = KEYS[1], KEYS[2]
local token, cap, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now = tonumber(redis.call('TIME')[1])
redis.call('HSET', procs, token, now + ttl)
local open = 0
local fields = redis.call('HGETALL', client)
for i = 1, #fields, 2 do
  if tonumber(redis.call('HGET', procs, fields[i]) or '0') < now then
    redis.call('HDEL', client, fields[i])
  else
    open = open + tonumber(fields[i + 1])
  end
end
if open >= cap then return 0 end
redis.call('HINCRBY', client, token, 1)
redis.call('EXPIRE', client, 86400)
return 1
"""

CLOSE_STREAM_LUA = """
if redis.call('HINCRBY', KEYS[1], ARGV[1], -1) <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 1
"""


@dataclass(frozen=True)
class Endorsement:
    """What one person gives: already validated, email already reduced to its HMAC (hex).

    ``entry`` is its line in the public transparency log, as a template the store fills
    in with the index it gets, and ``commit`` that line's receipt commitment; without
    them the store makes a line that shows nothing (for tools and tests)."""

    email_hmac: str
    name: str
    country: str = ""
    source: str = "direct"
    public: bool = False
    entry: Template | None = None
    commit: str = ""


@dataclass(frozen=True)
class Window:
    """One window of a rate-limit tier: at most ``amount`` per ``seconds``."""

    amount: int
    seconds: int


@dataclass(frozen=True)
class Tier:
    """A rate limit on one subject (a hashed client or network, a source, the statement).
    ``on_duplicate``: whether an endorsement found to be a duplicate also uses it up."""

    name: str
    subject: str
    windows: tuple[Window, ...]
    on_duplicate: bool = False


@dataclass(frozen=True)
class Guard:
    """What an endorsement must get past besides dedup: the tiers it consumes, and the
    proof-of-work nonce it uses up (with how long to remember it)."""

    tiers: tuple[Tier, ...] = ()
    pow_nonce: str = ""
    pow_ttl: int = 0
    legacy_hmac: str = ""  # the email's HMAC under the previous normalising rule


@dataclass(frozen=True)
class EndorseResult:
    """``entry_id`` is the log entry (counted, duplicate); for ``limited``, ``tier`` names
    the tier that refused and ``retry_after`` says in how many seconds to try again."""

    status: EndorseStatus
    count: int
    entry_id: str = ""
    tier: str = ""
    retry_after: int = 0


class NotDurable(RuntimeError):
    """The write happened on the master, but fewer replicas than
    ``WIDGET_REDIS_WAIT_REPLICAS`` confirmed it within the timeout: should the master die
    now, it may be lost. Not acknowledged; a retry is a duplicate (kept) or a fresh count
    (lost), never a second count."""

    def __init__(self, status: str, confirmed: int) -> None:
        super().__init__(f"{status}, confirmed by {confirmed} replicas")
        self.status = status
        self.confirmed = confirmed


@dataclass(frozen=True)
class PendingEndorsement:
    """An endorsement waiting for its owner to confirm it by email: what ``Endorsement``
    holds (the log line is made when it is confirmed, at that minute), the endorser's
    language (for the mail and the pages) and the hex SHA-256 of the text they were shown."""

    email_hmac: str
    name: str
    country: str = ""
    source: str = "direct"
    public: bool = False
    lang: str = "en"
    text: str = ""


@dataclass(frozen=True)
class PendingResult:
    """``pending`` with the mail to send: ``link`` (a new confirmation link), ``already``
    (the address has endorsed) or ``none`` (one went out in the last 10 minutes); or a
    refusal as ``EndorseResult`` has them (``closed``, ``unready``, ``replay``,
    ``limited`` with its tier and wait)."""

    status: EndorseStatus
    count: int
    mail: str = ""
    tier: str = ""
    retry_after: int = 0


@dataclass(frozen=True)
class PendingRecord:
    """A pending endorsement as kept under its token's hash (no email, only its HMAC)."""

    statement_id: str
    email_hmac: bytes
    name: str
    country: str
    source: str
    public: bool
    lang: str
    text: str


@dataclass(frozen=True)
class TokenLookup:
    """What a confirmation token points at: its pending endorsement, or what became of it
    (``used``, ``replaced``, ``expired``; ``unknown`` when no statement knows it), with the
    statement and language when known."""

    state: str
    statement_id: str = ""
    lang: str = ""
    record: PendingRecord | None = None


@dataclass(frozen=True)
class ConfirmResult:
    """``counted`` (with its log entry), ``duplicate`` (the address had endorsed
    meanwhile; the token is used up), ``gone`` (with what became of the token),
    ``unknown``, ``closed`` or ``unready`` (the token is kept)."""

    status: str
    count: int
    entry_id: str = ""
    gone: str = ""


# What a token's state letter says (see CONFIRM_LUA): used, replaced or expired.
TOKEN_STATES = {"u": "used", "d": "used", "s": "replaced", "x": "expired", "p": "expired"}


class LogNotReady(RuntimeError):
    """The statement's transparency log is still being prepared (an upgrade seals the
    endorsements made before it first); nothing was written. Try again in a moment."""


@dataclass(frozen=True)
class Receipt:
    """A receipt's endorsement: its index in the transparency log, its record id, and
    ``counted``, ``struck`` or ``withdrawn``."""

    index: int
    entry_id: str
    status: str


@dataclass(frozen=True)
class LogProgress:
    """A statement's transparency log: ``size`` lines, the first ``sealed`` of them under
    the latest checkpoint, whose count is ``sealed_count``, signed at ``sealed_at`` (epoch
    seconds by Redis's clock; 0 before the first seal)."""

    size: int
    sealed: int
    sealed_count: int
    sealed_at: int

    @property
    def unsealed(self) -> int:
        return max(0, self.size - self.sealed)


@dataclass(frozen=True)
class LogEntry:
    """One endorsement as the record holds it, without its HMAC."""

    id: str
    time_ms: int
    name: str
    country: str
    source: str
    public: bool
    struck: Mapping[str, Any] | None = None
    index: int | None = None  # in the transparency log (older entries: see legacy_i)
    confirmed: bool = False  # its owner confirmed it by email (it counted then)


@dataclass(frozen=True)
class BulkFilter:
    """Which endorsements a bulk strike takes: all given conditions hold. Times are
    compared at the minute entries carry: ``since_ms`` and ``until_ms`` are minute starts
    (epoch milliseconds), both included."""

    source: str | None = None
    country: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class BulkSelection:
    """The live (not struck) entries that match, oldest first, among those up to ``upto``
    (the newest entry id the selection looked at; None when the record is empty)."""

    ids: list[str]
    upto: str | None


@dataclass(frozen=True)
class BulkResult:
    bulk_id: str
    changed: int  # entries struck (or restored, for an undo) by this call
    count: int


class Store:
    """Statements' counts and endorsements in Redis, through atomic scripts."""

    def __init__(
        self,
        redis: RedisClient,
        prefix: str = "us",
        surge_floor: int = 30,
        *,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 500,
        sharded: bool | None = None,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.surge_floor = surge_floor
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        # Sharded pub/sub: the scripts announce counts with SPUBLISH, which stays within
        # the statement's shard of a cluster (its channel carries the statement's tag).
        # Unsaid: sharded on a cluster, classic otherwise (WIDGET_REDIS_PUBSUB=auto).
        self.sharded = isinstance(redis, RedisCluster) if sharded is None else sharded
        self._endorse = redis.register_script(self._publishing(ENDORSE_LUA))
        self._scripts: dict[str, Any] = {}
        self._surges: dict[str, tuple[float, Surge]] = {}

    # -- key names -------------------------------------------------------------------
    def key(self, statement_id: str, name: str) -> str:
        return f"{self.prefix}:{{{statement_id}}}:{name}"

    def channel(self, statement_id: str) -> str:
        return self.key(statement_id, "events")

    def statement_id_from_channel(self, channel: str) -> str:
        return channel.split("{", 1)[1].split("}", 1)[0]

    # -- reads -----------------------------------------------------------------------
    def ping(self) -> bool:
        """Redis answers; on a cluster, every master does (each holds some statements)."""
        if isinstance(self.redis, RedisCluster):
            return bool(self.redis.ping(target_nodes=RedisCluster.PRIMARIES))
        return bool(self.redis.ping())

    def count(self, statement_id: str) -> int:
        return int(self.redis.get(self.key(statement_id, "count")) or 0)

    def counts(self, statement_ids: Iterable[str]) -> dict[str, int]:
        ids = list(statement_ids)
        pipe = self.redis.pipeline(transaction=False)
        for sid in ids:
            pipe.get(self.key(sid, "count"))
        return {sid: int(v or 0) for sid, v in zip(ids, pipe.execute(), strict=True)}

    def count_and_closed(self, statement_id: str) -> tuple[int, bool]:
        """The count and the operator's closed flag in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(self.key(statement_id, "count"))
        pipe.hget(self.key(statement_id, "state"), "closed")
        count, closed = pipe.execute()
        return int(count or 0), closed in (b"1", "1")

    def surging(self, statement_id: str) -> bool:
        """Whether the statement itself is surging: its endorsements in the last 5 minutes
        above ``surge.FACTOR`` times its usual rate and above the floor (see ``surge``).
        Asked for every proof-of-work challenge, so one assessment is reused for
        ``SURGE_CACHE_SECONDS`` by this process."""
        cached = self._surges.get(statement_id)
        clock = time.monotonic()
        if cached is not None and cached[0] > clock:
            return cached[1].statement.surging
        found = self.surge(statement_id)
        self._surges[statement_id] = (clock + SURGE_CACHE_SECONDS, found)
        return found.statement.surging

    def surge(self, statement_id: str, now: float | None = None) -> Surge:
        """The statement's and its sources' rates now (or at ``now``): one round trip."""
        at = time.time() if now is None else now
        return assess(self.arrivals(statement_id, at), self.surge_floor)

    def arrivals(self, statement_id: str, now: float) -> Arrivals:
        """The arrival buckets around ``now`` (one round trip), laid out as ``Arrivals``."""
        now_s = int(now)
        minute, hour = now_s - now_s % 60, now_s - now_s % 3600
        pipe = self.redis.pipeline(transaction=False)
        for i in range(WINDOW_BUCKETS):
            pipe.hgetall(self.key(statement_id, f"src:m:{minute - 60 * i}"))
        for i in range(1, BASELINE_HOURS + 1):
            pipe.hgetall(self.key(statement_id, f"src:h:{hour - 3600 * i}"))
        found = [{_text(k): int(v) for k, v in raw.items()} for raw in pipe.execute()]
        return Arrivals(
            minutes=found[:WINDOW_BUCKETS], hours=found[WINDOW_BUCKETS:], second=now - minute
        )

    def recent_countries(
        self, statement_id: str, now: float | None = None, limit: int = 5000
    ) -> tuple[dict[str, int], int]:
        """Endorsements per country (``""``: none given) among the newest ``limit`` of the
        last 5 minute buckets of the record, struck ones included; and how many were read."""
        now_s = int(time.time() if now is None else now)
        first_ms = (now_s - now_s % 60 - 60 * (WINDOW_BUCKETS - 2)) * 1000
        rows = self.redis.xrevrange(
            self.key(statement_id, "log"), max="+", min=str(first_ms), count=limit
        )
        counts: dict[str, int] = {}
        for entry in self._entries(statement_id, list(rows or [])):
            counts[entry.country] = counts.get(entry.country, 0) + 1
        ordered = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
        return ordered, len(rows or [])

    def log_length(self, statement_id: str) -> int:
        """How many endorsements the record holds, struck ones included."""
        return int(self.redis.xlen(self.key(statement_id, "log")))

    def is_closed(self, statement_id: str) -> bool:
        return self.redis.hget(self.key(statement_id, "state"), "closed") in (b"1", "1")

    def recent(self, statement_id: str, limit: int = 5) -> list[LogEntry]:
        """The newest live (not struck) endorsements, newest first."""
        struck = {_text(k) for k in self.redis.hkeys(self.key(statement_id, "struck"))}
        entries: list[LogEntry] = []
        for entry in self._scan_log(statement_id, newest_first=True, batch=limit * 2 + 10):
            if entry.id in struck:
                continue
            entries.append(entry)
            if len(entries) >= limit:
                break
        return entries

    def log(
        self, statement_id: str, *, newest_first: bool = False, batch: int = 500
    ) -> Iterator[LogEntry]:
        """Every endorsement in the record, struck ones marked, streamed in batches."""
        struck = {
            _text(k): json.loads(v)
            for k, v in self.redis.hgetall(self.key(statement_id, "struck")).items()
        }
        for entry in self._scan_log(statement_id, newest_first=newest_first, batch=batch):
            if entry.id in struck:
                entry = LogEntry(**{**entry.__dict__, "struck": struck[entry.id]})
            yield entry

    def _scan_log(self, statement_id: str, *, newest_first: bool, batch: int) -> Iterator[LogEntry]:
        log_key = self.key(statement_id, "log")
        cursor = "+" if newest_first else "-"
        while True:
            rows: list[tuple[Any, Any]]
            if newest_first:
                rows = self.redis.xrevrange(log_key, max=cursor, min="-", count=batch) or []
            else:
                rows = self.redis.xrange(log_key, min=cursor, max="+", count=batch) or []
            yield from self._entries(statement_id, rows)
            if len(rows) < batch:
                return
            last = _text(rows[-1][0])
            cursor = "(" + last

    def _entries(self, statement_id: str, rows: list[tuple[Any, Any]]) -> list[LogEntry]:
        """Record rows with their private parts (name, country) read in one round trip."""
        records = [dict(fields or {}).get(b"r") for _, fields in rows]
        private: list[Any] = [None] * len(rows)
        wanted = [(n, r) for n, r in enumerate(records) if r]
        if wanted:
            pipe = self.redis.pipeline(transaction=False)
            for _, r in wanted:
                pipe.hget(self._who_key(statement_id, r), r)
            for (n, _), value in zip(wanted, pipe.execute(), strict=True):
                private[n] = value
        return [
            _entry(entry_id, fields or {}, found)
            for (entry_id, fields), found in zip(rows, private, strict=True)
        ]

    # -- the transparency log (see widget/tlog) ---------------------------------------
    def log_ready(self, statement_id: str) -> bool:
        return self.redis.hget(self.key(statement_id, "state"), "tlog") in (b"ready", "ready")

    def prepare_log(
        self, statement_id: str, expected: int, lines: list[tuple[bytes, str]], last: bool
    ) -> int:
        """Append ``(line, record id or "")`` pairs to a log that holds ``expected`` lines and
        is not ready yet; ``last`` makes it ready. The new length, -1 if it was ready, -2 if
        it did not hold ``expected`` lines."""
        keys = [self.key(statement_id, n) for n in ("tlog", "legacy_i", "state")]
        args: list[Any] = [expected, "1" if last else "0"]
        for line, entry_id in lines:
            args += [_pack(line), entry_id]
        return int(self._script("prepare", PREPARE_LUA)(keys=keys, args=args))

    def log_size(self, statement_id: str) -> int:
        return int(self.redis.llen(self.key(statement_id, "tlog")))

    def log_lines(self, statement_id: str, start: int, stop: int) -> list[bytes]:
        """Lines ``start`` to ``stop - 1`` (fewer at the end of the log)."""
        if stop <= start:
            return []
        lines: Any = self.redis.lrange(self.key(statement_id, "tlog"), start, stop - 1)
        return [_unpack(bytes(line)) for line in lines]

    def log_head(self, statement_id: str) -> tuple[int, str | None]:
        """The sealed size and its signed checkpoint (None before the first seal)."""
        size, note = self.redis.hmget(self.key(statement_id, "tlog:head"), "size", "note")
        return int(size or 0), (_text(note) if note is not None else None)

    def log_state(self, statement_id: str) -> tuple[bool, int, int, str | None]:
        """For the sealing loop, in one round trip: whether the log is open, its size, the
        sealed size and that size's signed checkpoint (None before the first seal)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(self.key(statement_id, "state"), "tlog")
        pipe.llen(self.key(statement_id, "tlog"))
        pipe.hmget(self.key(statement_id, "tlog:head"), "size", "note")
        ready, length, (size, note) = pipe.execute()
        return (
            ready in (b"ready", "ready"),
            int(length),
            int(size or 0),
            _text(note) if note is not None else None,
        )

    def seal_inputs(
        self, statement_id: str, start: int, stop: int, spans: Iterable[Span]
    ) -> tuple[list[bytes], list[bytes]]:
        """What a seal reads, in one round trip: lines ``start`` to ``stop - 1`` and the
        stored hashes of each span."""
        spans = list(spans)
        pipe = self.redis.pipeline(transaction=False)
        pipe.lrange(self.key(statement_id, "tlog"), start, max(start, stop) - 1)
        for span in spans:
            first = span.start * HASH_SIZE
            pipe.getrange(
                self._level_key(statement_id, span.level),
                first,
                first + span.length * HASH_SIZE - 1,
            )
        lines, *blobs = pipe.execute()
        unpacked = [_unpack(bytes(line)) for line in lines] if stop > start else []
        return unpacked, [bytes(blob) for blob in blobs]

    def tree_spans(self, statement_id: str, spans: Iterable[Span]) -> list[bytes]:
        """The stored hashes of each span (one round trip): 32 bytes each, in order."""
        pipe = self.redis.pipeline(transaction=False)
        for span in spans:
            start = span.start * HASH_SIZE
            pipe.getrange(
                self._level_key(statement_id, span.level),
                start,
                start + span.length * HASH_SIZE - 1,
            )
        return [bytes(blob) for blob in pipe.execute()]

    def seal(
        self,
        statement_id: str,
        old_size: int,
        new_size: int,
        appends: Mapping[int, bytes],
        note: str,
        changes: Iterable[tuple[str, int]],
    ) -> bool:
        """Store what a seal adds: the tree hashes (level -> hashes to append), each new
        entry's effect on the count (``("e", i)`` an endorsement, ``("s"|"u"|"w", target)``
        a strike, unstrike or withdrawal) and the checkpoint; unless the tree moved since
        ``old_size``. True when this call sealed."""
        levels = sorted(appends)
        keys = [self.key(statement_id, "tlog:head"), self.key(statement_id, "tlog:status")]
        keys += [self._level_key(statement_id, level) for level in levels]
        args: list[Any] = [old_size, new_size, note, len(levels)]
        args += [(old_size >> level) * HASH_SIZE for level in levels]
        args += [appends[level] for level in levels]
        for kind, index in changes:
            args += [kind, index]
        return bool(self._script("seal", SEAL_LUA)(keys=keys, args=args))

    def log_progress(self, statement_id: str) -> LogProgress:
        """How far sealing is: the log's size, the sealed size and count, and when the
        last seal was (one round trip)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.llen(self.key(statement_id, "tlog"))
        pipe.hmget(self.key(statement_id, "tlog:head"), "size", "count", "at")
        size, (sealed, count, at) = pipe.execute()
        return LogProgress(int(size), int(sealed or 0), int(count or 0), int(at or 0))

    def sealed_head(self, statement_id: str) -> tuple[int, str | None, int]:
        """The sealed size, its signed checkpoint and the count by the log's rule at it,
        read together (one seal's)."""
        raw = self.redis.hmget(self.key(statement_id, "tlog:head"), "size", "note", "count")
        size, note, count = raw
        return int(size or 0), (_text(note) if note is not None else None), int(count or 0)

    def sealed_count(self, statement_id: str) -> int:
        """The count by the log's rule at the sealed size."""
        return int(self.redis.hget(self.key(statement_id, "tlog:head"), "count") or 0)

    def sealed_status(self, statement_id: str, index: int) -> str:
        """An endorse entry's status by the log's rule at the sealed size."""
        # Two bits per entry, entry i at bit 2i (BITFIELD's "#i" offsets).
        raw: Any = self.redis.getrange(
            self.key(statement_id, "tlog:status"), index // 4, index // 4
        )
        value = (bytes(raw)[0] >> (6 - 2 * (index % 4))) & 3 if raw else 0
        return {1: "counted", 2: "struck", 3: "withdrawn"}.get(int(value), "unknown")

    def _level_key(self, statement_id: str, level: int) -> str:
        return self.key(statement_id, f"tree:{level}")

    def lease(self, statement_id: str, name: str, token: str, seconds: float) -> bool:
        """Take (or keep, with the same token) a short lease, so that one process at a time
        does ``name`` for this statement."""
        key = self.key(statement_id, f"lease:{name}")
        script = self._script("lease", LEASE_LUA)
        return bool(script(keys=[key], args=[token, int(seconds * 1000)]))

    def log_key(self, offered: bytes) -> bytes:
        """The service's log key as kept (encrypted by the caller): ``offered`` unless one
        is kept already."""
        key = f"{self.prefix}:logkey"
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(key, offered, nx=True)
        pipe.get(key)
        kept: Any = pipe.execute()[1]
        return bytes(kept)

    def keep_texts(self, statement_id: str, texts: Mapping[str, str]) -> None:
        """Keep each text version (SHA-256 hex -> Markdown) for good."""
        if texts:
            pipe = self.redis.pipeline(transaction=False)
            for digest, markdown in texts.items():
                pipe.hsetnx(self.key(statement_id, "texts"), digest, markdown)
            pipe.execute()

    def text_version(self, statement_id: str, digest: str) -> str | None:
        found = self.redis.hget(self.key(statement_id, "texts"), digest)
        return _text(found) if found is not None else None

    def legacy_entries(self, statement_id: str) -> tuple[list[LogEntry], dict[str, Any]]:
        """The record's entries made before the transparency log (they have no index),
        and every strike record (entry id -> {by, at, reason})."""
        entries = [
            e
            for e in self._scan_log(statement_id, newest_first=False, batch=1000)
            if e.index is None
        ]
        struck = {
            _text(k): json.loads(v)
            for k, v in self.redis.hgetall(self.key(statement_id, "struck")).items()
        }
        return entries, struck

    # -- live-count streams per client ----------------------------------------------
    def open_stream(self, client: str, process: str, cap: int, alive_for: int) -> bool:
        """Count one more stream of ``client`` (a keyed hash) served by ``process``, unless
        the client already holds ``cap`` open streams; False refuses it."""
        keys = [f"{self.prefix}:{{streams}}:c:{client}", f"{self.prefix}:{{streams}}:procs"]
        script = self._script("open_stream", OPEN_STREAM_LUA)
        return bool(script(keys=keys, args=[process, cap, alive_for]))

    def close_stream(self, client: str, process: str) -> None:
        script = self._script("close_stream", CLOSE_STREAM_LUA)
        script(keys=[f"{self.prefix}:{{streams}}:c:{client}"], args=[process])

    def process_alive(self, process: str, alive_for: int) -> None:
        """``process`` still serves its streams for at least ``alive_for`` seconds."""
        procs = f"{self.prefix}:{{streams}}:procs"
        self.redis.hset(procs, process, int(time.time()) + alive_for)

    def daily_salt(self, day: str, offered: str, expires_at: int) -> str:
        """The salt of ``day`` for hashing client addresses: ``offered`` unless the day
        has one already (the first process to ask sets it for all), gone at
        ``expires_at``."""
        key = f"{self.prefix}:salt:{day}"
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(key, offered, nx=True, exat=expires_at)
        pipe.get(key)
        salt = pipe.execute()[1]
        return _text(salt)

    def _script(self, name: str, source: str) -> Any:
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self.redis.register_script(self._publishing(source))
        return script

    def _publishing(self, source: str) -> str:
        if self.sharded:
            return source.replace("redis.call('PUBLISH',", "redis.call('SPUBLISH',")
        return source

    # -- durability (WIDGET_REDIS_WAIT_REPLICAS) ----------------------------------------
    def _durable(self, script: Any, keys: list[Any], args: list[Any], wanted: set[str]) -> Any:
        """Run ``script``; with ``wait_replicas``, follow it with ``WAIT`` on the same
        connection (a pipeline to the node serving the keys' slot), and raise
        ``NotDurable`` when the script's status is in ``wanted`` but fewer replicas than
        asked confirmed it in time. Without it, exactly ``script(keys, args)``."""
        if not self.wait_replicas:
            return script(keys=keys, args=args)
        client: Any = self.redis
        for attempt in range(3):
            if isinstance(self.redis, RedisCluster):
                node = self.redis.get_node_from_key(keys[0])  # type: ignore[no-untyped-call]
                client = self.redis.get_redis_connection(node)
            pipe = client.pipeline(transaction=False)
            pipe.evalsha(script.sha, len(keys), *keys, *args)
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
            try:
                result, confirmed = pipe.execute()
            except NoScriptError:  # a new node (a failover, a restart) has no script cache
                client.script_load(script.script)
                continue
            except (MovedError, AskError, TryAgainError):  # the slot moved: ask again
                self._refresh_slots()
                if attempt == 2:
                    raise
                continue
            except (RedisConnectionError, RedisTimeoutError, ClusterDownError):
                self._refresh_slots()
                raise
            status = _text(result[0])
            if status in wanted and int(confirmed) < self.wait_replicas:
                raise NotDurable(status, int(confirmed))
            return result
        raise NoScriptError("the script could not be loaded")

    def _refresh_slots(self) -> None:
        if isinstance(self.redis, RedisCluster):
            with contextlib.suppress(Exception):  # all nodes unreachable: a 503 anyway
                self.redis.nodes_manager.initialize()

    # -- writes ----------------------------------------------------------------------
    def endorse(
        self, statement_id: str, endorsement: Endorsement, guard: Guard = Guard()
    ) -> EndorseResult:
        """Record one endorsement in one atomic step (see ``ENDORSE_LUA``)."""
        hmac = _hmac_bytes(endorsement.email_hmac)
        record = secrets.token_bytes(8)  # links the entry to its private, erasable record
        entry, commit = endorsement.entry, endorsement.commit
        if entry is None:
            commit = commitment(secrets.token_urlsafe(24))
            entry = endorse_template(
                _minute(time.time()),
                country=None,
                source=endorsement.source,
                name=None,
                text=sha256_hex(b""),
                commit=commit,
            )
        head, tail = map(_pack, entry.pieces)
        keys = [
            self.key(statement_id, name)
            for name in ("count", "", "log", "by_source", "by_country", "tl:m", "tl:h", "tl:d")
        ]
        keys[1] = self._seen_key(statement_id, hmac)
        keys += [
            self.key(statement_id, "state"),
            self.key(statement_id, f"pow:{guard.pow_nonce}"),
            self.key(statement_id, "tlog"),
            self._commit_key(statement_id, commit),
            self._who_key(statement_id, record),
            self.key(statement_id, "seen"),
        ]
        legacy = _legacy_hmacs(endorsement.email_hmac, guard.legacy_hmac)
        now = time.time()
        now_ms = int(now * 1000)
        args: list[str | int | bytes] = [
            hmac,
            legacy,
            record,
            _private(hmac, endorsement.country, endorsement.name),
            endorsement.country,
            endorsement.source,
            "1" if endorsement.public else "0",
            self.channel(statement_id),
            guard.pow_ttl if guard.pow_nonce else 0,
            now_ms,
            int(now // 60) * 60_000,
            head,
            tail,
            _commit_field(commit),
        ]
        tier_keys, tier_args = self._tier_windows(statement_id, guard, now_ms)
        keys += tier_keys
        args += tier_args
        arrival_keys, arrival_args = self._arrivals(statement_id, now)
        keys += arrival_keys
        args += arrival_args
        found = self._durable(self._endorse, keys, args, {"counted", "duplicate"})
        status, count, detail, retry_after = found
        status = _text(status)
        return EndorseResult(
            status=status,  # type: ignore[arg-type]
            count=int(count),
            entry_id=_text(detail) if status == "counted" else "",
            tier=_text(detail) if status == "limited" else "",
            retry_after=int(retry_after),
        )

    def _tier_windows(
        self, statement_id: str, guard: Guard, now_ms: int
    ) -> tuple[list[str], list[str | int | bytes]]:
        """The keys and arguments of every tier window (see ``_TIERS``), the count first."""
        windows = [(tier, window) for tier in guard.tiers for window in tier.windows]
        # Windows follow this host's clock, which names their keys (Redis Cluster wants
        # every key named up front); hosts a little apart only shift a boundary a little.
        keys: list[str] = []
        args: list[str | int | bytes] = [len(windows)]
        for tier, window in windows:
            index = now_ms // (window.seconds * 1000)
            base = f"rl:{tier.name}:{tier.subject}:{window.seconds}"
            keys.append(self.key(statement_id, f"{base}:{index}"))
            keys.append(self.key(statement_id, f"{base}:{index - 1}"))
            args += [window.amount, window.seconds, tier.name, "1" if tier.on_duplicate else "0"]
        return keys, args

    def _arrivals(self, statement_id: str, now: float) -> tuple[list[str], list[str | int | bytes]]:
        """The arrival buckets surge detection reads (see ``surge``), by this host's clock,
        and when each expires."""
        minute, hour = int(now // 60) * 60, int(now // 3600) * 3600
        keys = [self.key(statement_id, f"src:m:{minute}"), self.key(statement_id, f"src:h:{hour}")]
        return keys, [minute + ARRIVAL_MINUTE_TTL, hour + ARRIVAL_HOUR_TTL]

    # Where an endorsement's pieces live. The buckets keep each hash small, which Redis
    # stores compactly (a listpack), and a key name is known before the script runs.
    def _seen_key(self, statement_id: str, hmac: bytes) -> str:
        return self.key(statement_id, f"seen:{_bucket(hmac)}")

    def _who_key(self, statement_id: str, record: bytes) -> str:
        return self.key(statement_id, f"who:{_bucket(record)}")

    def _commit_key(self, statement_id: str, commit: str) -> str:
        return self.key(statement_id, f"rc:{_bucket(bytes.fromhex(commit))}")

    # -- email confirmation (see PENDING_LUA, CONFIRM_LUA) ------------------------------
    def _pending_key(self, statement_id: str, token_hash: str) -> str:
        return self.key(statement_id, f"cf:{token_hash}")

    def _token_key(self, statement_id: str, token_hash: str) -> str:
        return self.key(statement_id, f"cft:{token_hash}")

    def _address_key(self, statement_id: str, kind: str, hmac: bytes) -> str:
        return self.key(statement_id, f"{kind}:{hmac.hex()}")

    def ask_confirmation(
        self,
        statement_id: str,
        pending: PendingEndorsement,
        guard: Guard,
        token_hash: str,
        ttl: int,
    ) -> PendingResult:
        """Hold an endorsement of a confirming statement until its owner confirms (one
        atomic step, see ``PENDING_LUA``): a new link under ``token_hash`` (the hex SHA-256
        of the token that goes by mail), an "already endorsed" mail, or none."""
        hmac = _hmac_bytes(pending.email_hmac)
        legacy = _legacy_hmacs(pending.email_hmac, guard.legacy_hmac)
        index = self._address_key(statement_id, "cfi", hmac)
        new_rec = self._pending_key(statement_id, token_hash)
        new_tok = self._token_key(statement_id, token_hash)
        for _ in range(8):
            # The address's live token names its record's key, which the script needs up
            # front; the script checks it is still the same, or answers retry.
            live: Any = self.redis.hget(index, "t")
            expected = _text(live) if live is not None else ""
            now = time.time()
            now_ms = int(now * 1000)
            keys = [
                self.key(statement_id, "count"),
                self.key(statement_id, "log"),
                self.key(statement_id, "state"),
                self.key(statement_id, f"pow:{guard.pow_nonce}"),
                self._seen_key(statement_id, hmac),
                self.key(statement_id, "seen"),
                index,
                self._address_key(statement_id, "cfm", hmac),
                new_rec,
                new_tok,
                self._pending_key(statement_id, expected) if expected else new_rec,
                self._token_key(statement_id, expected) if expected else new_tok,
                self.key(statement_id, "cfp"),
                self.key(statement_id, "cfs"),
            ]
            args: list[str | int | bytes] = [
                hmac,
                legacy,
                expected,
                token_hash,
                guard.pow_ttl if guard.pow_nonce else 0,
                now_ms,
                ttl,
                ttl + TOKEN_AFTERLIFE,
                MAIL_QUIET,
                pending.lang,
                pending.name,
                pending.country,
                pending.source,
                "1" if pending.public else "0",
                pending.text,
            ]
            tier_keys, tier_args = self._tier_windows(statement_id, guard, now_ms)
            script = self._script("pending", PENDING_LUA)
            status, count, detail, retry_after = self._durable(
                script, keys + tier_keys, args + tier_args, {"pending"}
            )
            if _text(status) != "retry":
                break
        else:  # pragma: no cover - only an address endorsed in a tight loop gets here
            raise RuntimeError("the address's pending endorsement kept changing")
        status = _text(status)
        return PendingResult(
            status=status,  # type: ignore[arg-type]
            count=int(count),
            mail=_text(detail) if status == "pending" else "",
            tier=_text(detail) if status == "limited" else "",
            retry_after=int(retry_after),
        )

    def allow_mail_again(self, statement_id: str, email_hmac: str) -> None:
        """Forget that a mail went to this address (its job could not be queued), so that
        the next endorsement mails at once."""
        hmac = _hmac_bytes(email_hmac)
        self.redis.delete(self._address_key(statement_id, "cfm", hmac))

    def lookup_token(self, statement_ids: Iterable[str], token_hash: str) -> TokenLookup:
        """What a confirmation token points at, in whichever statement knows it (one round
        trip; reads only)."""
        ids = list(statement_ids)
        pipe = self.redis.pipeline(transaction=False)
        for sid in ids:
            pipe.hgetall(self._pending_key(sid, token_hash))
            pipe.get(self._token_key(sid, token_hash))
        found = pipe.execute()
        for n, sid in enumerate(ids):
            fields, state = found[2 * n], found[2 * n + 1]
            if fields:
                record = _pending_record(sid, fields)
                return TokenLookup("pending", sid, record.lang, record)
            if state is not None:
                letter, _, lang = _text(state).partition(":")
                return TokenLookup(TOKEN_STATES.get(letter, "expired"), sid, lang)
        return TokenLookup("unknown")

    def confirm(
        self,
        statement_id: str,
        token_hash: str,
        record: PendingRecord,
        entry: Template,
        commit: str,
    ) -> ConfirmResult:
        """The owner of the inbox confirms the endorsement ``record`` (as ``lookup_token``
        read it), with its log line ``entry`` and receipt commitment ``commit``: counted as
        ``endorse`` counts, in one atomic step that uses the token up (see CONFIRM_LUA)."""
        hmac = record.email_hmac
        record_id = secrets.token_bytes(8)
        now = time.time()
        keys = [
            self.key(statement_id, "count"),
            self.key(statement_id, "log"),
            self.key(statement_id, "state"),
            self._seen_key(statement_id, hmac),
            self.key(statement_id, "seen"),
            self._pending_key(statement_id, token_hash),
            self._token_key(statement_id, token_hash),
            self._address_key(statement_id, "cfi", hmac),
            self.key(statement_id, "cfp"),
            self.key(statement_id, "cfs"),
        ]
        keys += [
            self.key(statement_id, name)
            for name in ("by_source", "by_country", "tl:m", "tl:h", "tl:d", "tlog")
        ]
        keys += [self._commit_key(statement_id, commit), self._who_key(statement_id, record_id)]
        arrival_keys, arrival_args = self._arrivals(statement_id, now)
        head, tail = map(_pack, entry.pieces)
        args: list[str | int | bytes] = [
            hmac,
            token_hash,
            record_id,
            _private(hmac, record.country, record.name),
            self.channel(statement_id),
            int(now // 60) * 60_000,
            head,
            tail,
            _commit_field(commit),
            *arrival_args,
        ]
        script = self._script("confirm", CONFIRM_LUA)
        found = self._durable(script, keys + arrival_keys, args, {"counted"})
        status, count, detail = found
        status = _text(status)
        gone = ""
        if status == "gone":
            gone = TOKEN_STATES.get(_text(detail).partition(":")[0], "expired")
        return ConfirmResult(
            status=status,
            count=int(count),
            entry_id=_text(detail) if status == "counted" else "",
            gone=gone,
        )

    def pending_alive(self, statement_id: str, token_hash: str) -> bool:
        """Whether the pending endorsement under this token still waits for its owner."""
        return bool(self.redis.exists(self._pending_key(statement_id, token_hash)))

    def drop_pending(self, statement_id: str, token_hash: str) -> bool:
        """Drop a pending endorsement whose mail could not be sent (see DROP_PENDING_LUA);
        True if it was still pending."""
        fields: Any = self.redis.hmget(self._pending_key(statement_id, token_hash), "h")
        hmac = fields[0] if fields and isinstance(fields[0], bytes) else b""
        keys = [
            self._pending_key(statement_id, token_hash),
            self._token_key(statement_id, token_hash),
            self._address_key(statement_id, "cfi", hmac),
            self.key(statement_id, "cfp"),
            self.key(statement_id, "cfs"),
        ]
        script = self._script("drop_pending", DROP_PENDING_LUA)
        return bool(script(keys=keys, args=[token_hash]))

    def confirmation_stats(
        self, statement_ids: Iterable[str], now: float | None = None
    ) -> dict[str, dict[str, int]]:
        """Per statement: ``pending`` (waiting for their owner now), and since the start
        ``asked`` (addresses sent a first link), ``confirmed`` (of those) and ``dropped``
        (their mail could not be sent). One round trip."""
        ids = list(statement_ids)
        at = int(time.time() if now is None else now)
        pipe = self.redis.pipeline(transaction=False)
        for sid in ids:
            pipe.zcount(self.key(sid, "cfp"), f"({at}", "+inf")
            pipe.hmget(self.key(sid, "cfs"), "asked", "confirmed", "dropped")
        found = pipe.execute()
        stats: dict[str, dict[str, int]] = {}
        for n, sid in enumerate(ids):
            asked, confirmed, dropped = (int(v or 0) for v in found[2 * n + 1])
            stats[sid] = {
                "pending": int(found[2 * n]),
                "asked": asked,
                "confirmed": confirmed,
                "dropped": dropped,
            }
        return stats

    def use_form_token(self, statement_id: str, token: str, lifetime: int) -> bool:
        """Spend a no-JS form token: True the first time, False ever after (until it
        expires anyway). Kept under a hash of the token, for as long as it is valid."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        key = self.key(statement_id, f"form:{digest}")
        return bool(self.redis.set(key, "1", nx=True, ex=lifetime))

    def set_closed(self, statement_id: str, closed: bool, by: str = "operator") -> None:
        state = self.key(statement_id, "state")
        if closed:
            self.redis.hset(
                state, mapping={"closed": "1", "closed_by": by, "closed_at": int(time.time())}
            )
        else:
            self.redis.hdel(state, "closed", "closed_by", "closed_at")

    # -- moderation and operator views (operator console) ------------------------------
    def _moderate(
        self, statement_id: str, entry_id: str, mode: str, record: str, template: Template
    ) -> tuple[bool, int]:
        if not is_entry_id(entry_id):
            raise KeyError(entry_id)
        keys = [self.key(statement_id, name) for name in MODERATION_KEYS]
        keys.append(self._who_key(statement_id, self._record_of(statement_id, entry_id)))
        keys.append(self.key(statement_id, "state"))
        args = [entry_id, mode, record, self.channel(statement_id), *map(_pack, template.pieces)]
        script = self._script("moderate", MODERATE_LUA)
        status, count = self._durable(script, keys, args, {"changed"})
        if _text(status) == "missing":
            raise KeyError(entry_id)
        if _text(status) == "unready":
            raise LogNotReady(statement_id)
        return _text(status) == "changed", int(count)

    def _record_of(self, statement_id: str, entry_id: str) -> bytes:
        """The id of an entry's private record, read before a script that touches the
        record (a script must name every key up front; it checks the entry again)."""
        rows: Any = self.redis.xrange(self.key(statement_id, "log"), entry_id, entry_id)
        record = dict(rows[0][1]).get(b"r") if rows else None
        return record if isinstance(record, bytes) else b""

    def strike(
        self, statement_id: str, entry_id: str, by: str, reason: str = ""
    ) -> tuple[bool, int]:
        """Take an endorsement out of the count and every breakdown; it stays in the
        record, marked struck with who/when/why, and the transparency log says so.
        Idempotent; ``KeyError`` for an unknown entry."""
        now = time.time()
        record = json.dumps({"by": by, "at": int(now), "reason": reason})
        template = moderation_template("strike", _minute(now), reason=reason)
        return self._moderate(statement_id, entry_id, "strike", record, template)

    def unstrike(self, statement_id: str, entry_id: str) -> tuple[bool, int]:
        """Put a struck endorsement back into the count and breakdowns. Idempotent."""
        template = moderation_template("unstrike", _minute(time.time()))
        return self._moderate(statement_id, entry_id, "unstrike", "", template)

    # -- receipts and withdrawal --------------------------------------------------------
    def receipt(self, statement_id: str, commit: str) -> Receipt | None:
        """Where the endorsement with this receipt commitment is, and how it stands."""
        raw = self.redis.hget(self._commit_key(statement_id, commit), _commit_field(commit))
        if raw is None:
            return None
        index, entry_id = _text(raw).split(" ", 1)
        pipe = self.redis.pipeline(transaction=False)
        pipe.xrange(self.key(statement_id, "log"), entry_id, entry_id)
        pipe.hexists(self.key(statement_id, "struck"), entry_id)
        rows, struck = pipe.execute()
        status = "withdrawn" if not rows else "struck" if struck else "counted"
        return Receipt(int(index), entry_id, status)

    def withdraw(self, statement_id: str, commit: str) -> tuple[str, int] | None:
        """The endorser takes back the endorsement with this receipt commitment: out of
        the count, a withdraw entry in the log, its name, country and email HMAC erased.
        ``(status, count)``; the same again changes nothing; None if no such receipt."""
        receipt = self.receipt(statement_id, commit)
        if receipt is None:
            return None
        record = self._record_of(statement_id, receipt.entry_id)
        who = self._who_key(statement_id, record)
        private: Any = (record and self.redis.hget(who, record)) or b""
        keys = [self.key(statement_id, name) for name in MODERATION_KEYS]
        keys += [who, self._seen_key(statement_id, private[:16]), self.key(statement_id, "state")]
        template = moderation_template("withdraw", _minute(time.time()))
        args = [receipt.entry_id, self.channel(statement_id), *map(_pack, template.pieces)]
        script = self._script("withdraw", WITHDRAW_LUA)
        status, count = self._durable(script, keys, args, {"withdrawn"})
        if _text(status) == "unready":
            raise LogNotReady(statement_id)
        return ("withdrawn", int(count))

    # -- bulk moderation ---------------------------------------------------------------
    def _bulk_keys(self, statement_id: str, bulk_id: str) -> list[str]:
        keys = [self.key(statement_id, name) for name in MODERATION_KEYS]
        keys.append(self.key(statement_id, "state"))
        keys.append(self.key(statement_id, f"bulk:{bulk_id}"))
        return keys

    def _record_keys(self, statement_id: str, ids: list[str]) -> list[str]:
        """The private-record bucket of each entry (read before the script that moves
        them, which names every key up front and checks each entry again)."""
        pipe = self.redis.pipeline(transaction=False)
        for entry_id in ids:
            pipe.xrange(self.key(statement_id, "log"), entry_id, entry_id)
        keys = []
        for rows in pipe.execute():
            record = dict(rows[0][1]).get(b"r") if rows else None
            keys.append(self._who_key(statement_id, record if isinstance(record, bytes) else b""))
        return keys

    def bulk_select(
        self, statement_id: str, match: BulkFilter, upto: str | None = None, batch: int = 1000
    ) -> BulkSelection:
        """The live entries matching ``match`` among those up to ``upto`` (default: the
        newest entry now), oldest first. Reads only; entries added later are never in it."""
        if upto is not None and not is_entry_id(upto):
            raise ValueError(f"bad entry id {upto!r}")
        log_key = self.key(statement_id, "log")
        if upto is None:
            newest = self.redis.xrevrange(log_key, max="+", min="-", count=1)
            if not newest:
                return BulkSelection([], None)
            upto = _text(newest[0][0])
        top = upto
        if match.until_ms is not None:
            top = min(upto, f"{match.until_ms}-18446744073709551615", key=_entry_key)
        cursor = "-" if match.since_ms is None else f"{match.since_ms}-0"
        struck_key = self.key(statement_id, "struck")
        ids: list[str] = []
        while True:
            rows = self.redis.xrange(log_key, min=cursor, max=top, count=batch) or []
            picked = [
                entry.id
                for entry in self._entries(statement_id, rows)
                if (match.source is None or entry.source == match.source)
                and (match.country is None or entry.country == match.country)
            ]
            if picked:
                marks = self.redis.hmget(struck_key, picked)
                ids.extend(i for i, mark in zip(picked, marks, strict=True) if mark is None)
            if len(rows) < batch:
                break
            cursor = "(" + _text(rows[-1][0])
        return BulkSelection(ids, upto)

    def strike_bulk(
        self,
        statement_id: str,
        selection: BulkSelection,
        by: str,
        reason: str,
        match: BulkFilter,
    ) -> BulkResult:
        """Strike every selected entry not struck meanwhile, in atomic batches, each as a
        single strike is (the struck record, with the bulk's id, and a strike entry in the
        transparency log); remembered for ``undo_bulk``. ``LogNotReady`` changes nothing."""
        if not self.log_ready(statement_id) and self.log_length(statement_id):
            raise LogNotReady(statement_id)
        bulk_id = secrets.token_hex(6)
        now = time.time()
        meta = self.key(statement_id, f"bulk:{bulk_id}:meta")
        self.redis.hset(
            meta,
            mapping={
                "by": by,
                "at": int(now),
                "reason": reason,
                "filters": json.dumps(match.as_dict()),
                "upto": selection.upto or "",
                "matched": len(selection.ids),
                "struck": 0,
                "restored": 0,
            },
        )
        record = json.dumps({"by": by, "at": int(now), "reason": reason, "bulk": bulk_id})
        template = moderation_template("strike", _minute(now), reason=reason)
        keys = self._bulk_keys(statement_id, bulk_id)
        script = self._script("bulk_strike", BULK_STRIKE_LUA)
        struck, count = 0, self.count(statement_id)
        for start in range(0, len(selection.ids), BULK_BATCH):
            chunk = selection.ids[start : start + BULK_BATCH]
            args = [record, self.channel(statement_id), *map(_pack, template.pieces), *chunk]
            status, n, count = script(keys=keys + self._record_keys(statement_id, chunk), args=args)
            if _text(status) == "unready":
                raise LogNotReady(statement_id)
            struck += int(n)
            self.redis.hincrby(meta, "struck", int(n))
        return BulkResult(bulk_id, struck, int(count))

    def undo_bulk(self, statement_id: str, bulk_id: str) -> BulkResult:
        """Restore what bulk ``bulk_id`` struck and nobody has restored or struck again
        since, in atomic batches, each as a single unstrike is. ``KeyError`` for an unknown
        bulk; a second undo restores nothing."""
        if not BULK_ID.fullmatch(bulk_id):
            raise KeyError(bulk_id)
        meta = self.key(statement_id, f"bulk:{bulk_id}:meta")
        if not self.redis.exists(meta):
            raise KeyError(bulk_id)
        keys = [*self._bulk_keys(statement_id, bulk_id), meta]
        members = keys[11]
        script = self._script("bulk_undo", BULK_UNDO_LUA)
        restored, count = 0, self.count(statement_id)
        # Oldest first, as they were struck; each batch takes its ids out of the set.
        ids = sorted((_text(i) for i in self.redis.smembers(members)), key=_entry_key)
        for start in range(0, len(ids), BULK_BATCH):
            chunk = ids[start : start + BULK_BATCH]
            template = moderation_template("unstrike", _minute(time.time()))
            args = [bulk_id, self.channel(statement_id), *map(_pack, template.pieces), *chunk]
            status, n, count = script(keys=keys + self._record_keys(statement_id, chunk), args=args)
            if _text(status) == "unready":
                raise LogNotReady(statement_id)
            restored += int(n)
        return BulkResult(bulk_id, restored, int(count))

    def bulk_info(self, statement_id: str, bulk_id: str) -> dict[str, Any] | None:
        """A bulk strike's record (by, at, reason, filters, upto, matched, struck, restored)."""
        if not BULK_ID.fullmatch(bulk_id):
            return None
        raw = self.redis.hgetall(self.key(statement_id, f"bulk:{bulk_id}:meta"))
        if not raw:
            return None
        info: dict[str, Any] = {_text(k): _text(v) for k, v in raw.items()}
        for name in ("at", "matched", "struck", "restored"):
            info[name] = int(info.get(name, 0))
        info["filters"] = json.loads(info.get("filters", "{}"))
        return info

    # -- block lists (keys of their own: they apply to every statement) ----------------------
    @property
    def blocks_key(self) -> str:
        return f"{self.prefix}:blocks"

    def blocks(self) -> dict[str, dict[str, Any]]:
        """Every block, expired or not, by id (one read)."""
        raw = self.redis.hgetall(self.blocks_key)
        return {_text(k): json.loads(v) for k, v in raw.items()}

    def add_block(self, record: Mapping[str, Any]) -> str:
        """Keep ``record`` (JSON-able, with ``expires``: epoch seconds or None) under a new
        short random id, and answer the id."""
        value = json.dumps(dict(record), separators=(",", ":"))
        while True:
            block_id = secrets.token_hex(4)
            if self.redis.hsetnx(self.blocks_key, block_id, value):
                return block_id

    def remove_block(self, block_id: str) -> bool:
        return bool(self.redis.hdel(self.blocks_key, block_id))

    def prune_blocks(self, now: float | None = None) -> int:
        """Forget expired blocks; answer how many."""
        script = self._script("prune_blocks", PRUNE_BLOCKS_LUA)
        return int(script(keys=[self.blocks_key], args=[int(time.time() if now is None else now)]))

    def stats(self, statement_id: str, now: float | None = None) -> dict[str, Any]:
        """Count, breakdowns and timelines: ``minute`` (last 60), ``hour`` (last 72),
        ``day`` (every day since the first), each a list of ``[bucket_start, n]``."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(self.key(statement_id, "count"))
        for name in ("by_source", "by_country", "tl:m", "tl:h", "tl:d"):
            pipe.hgetall(self.key(statement_id, name))
        count, by_source, by_country, tl_m, tl_h, tl_d = pipe.execute()
        now_s = int(time.time() if now is None else now)
        return {
            "count": int(count or 0),
            "by_source": _counts(by_source),
            "by_country": _counts(by_country),
            "timeline": {
                "minute": _series(tl_m, 60, now_s, 60),
                "hour": _series(tl_h, 3600, now_s, 72),
                "day": _series(tl_d, 86400, now_s, None),
            },
        }

    def page(
        self, statement_id: str, cursor: str | None = None, limit: int = 50
    ) -> tuple[list[LogEntry], str | None]:
        """Up to ``limit`` endorsements older than ``cursor`` (exclusive), newest first,
        struck ones marked; and the cursor of the next page, or None at the end."""
        if cursor is not None and not is_entry_id(cursor):
            raise ValueError(f"bad cursor {cursor!r}")
        if cursor == "0-0":
            return [], None  # nothing is older (and Redis refuses the range "(0-0")
        top = "+" if cursor is None else "(" + cursor
        rows = self.redis.xrevrange(
            self.key(statement_id, "log"), max=top, min="-", count=limit + 1
        )
        rows = list(rows or [])
        more = len(rows) > limit
        entries = self._entries(statement_id, rows[:limit])
        if entries:
            marks = self.redis.hmget(self.key(statement_id, "struck"), [e.id for e in entries])
            entries = [
                LogEntry(**{**e.__dict__, "struck": json.loads(m)}) if m else e
                for e, m in zip(entries, marks, strict=True)
            ]
        return entries, (entries[-1].id if more and entries else None)


def is_entry_id(text: Any) -> bool:
    """An endorsement id as this service gives them (a Redis stream id, written as Redis
    writes it): anything else is no endorsement, never a question to ask Redis, which
    would answer it with an error."""
    if not isinstance(text, str) or not ENTRY_ID.fullmatch(text):
        return False
    return all(int(half) <= STREAM_ID_MAX for half in text.split("-"))


def _entry_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


BUCKETS = 1024  # per kind and statement: compact hashes up to ~100,000 endorsements


def _bucket(raw: bytes) -> int:
    return int.from_bytes(raw[:4].ljust(4, b"\0"), "big") % BUCKETS


def _hmac_bytes(email_hmac: str) -> bytes:
    """The 16 bytes of an email HMAC that dedup keeps (hex in, binary out; any other
    string, as tools and tests may give, is hashed first)."""
    if len(email_hmac) == 64:
        try:
            return bytes.fromhex(email_hmac)[:16]
        except ValueError:
            pass
    return hashlib.sha256(email_hmac.encode()).digest()[:16]


def _commit_field(commit: str) -> bytes:
    """A receipt commitment as its bucket's field: bytes 4 to 16 (the bucket took 0-4)."""
    return bytes.fromhex(commit)[4:16]


def _legacy_hmacs(email_hmac: str, legacy_hmac: str) -> str:
    """What dedup looks for in the one hash of releases before the buckets, which kept the
    HMAC as given (hex): the address's HMAC as normalised now and as normalised before,
    space-separated."""
    return " ".join(dict.fromkeys(h for h in (email_hmac, legacy_hmac) if h and " " not in h))


def _private(hmac: bytes, country: str, name: str) -> bytes:
    """An endorsement's erasable record: its email HMAC, country (or two spaces), name."""
    return hmac + (country or "  ").encode()[:2].ljust(2) + name.encode()


def _pending_record(statement_id: str, fields: Mapping[Any, Any]) -> PendingRecord:
    f = {_text(k): v for k, v in fields.items()}

    def text(name: str) -> str:
        value = f.get(name, b"")
        return value.decode() if isinstance(value, bytes) else str(value)

    raw = f.get("h", b"")
    return PendingRecord(
        statement_id=statement_id,
        email_hmac=raw if isinstance(raw, bytes) else str(raw).encode(),
        name=text("n"),
        country=text("c"),
        source=text("s") or "direct",
        public=text("p") == "1",
        lang=text("l") or "en",
        text=text("v"),
    )


# -- the transparency log's lines as stored --------------------------------------------
#
# A line is kept packed: the fragments every line repeats become one byte each (control
# bytes, which a canonical JSON line never holds raw: it escapes them), and the two
# SHA-256 digests of an endorsement (``commit``, ``text``) their 32 raw bytes instead of
# 64 hex digits. ``_unpack`` gives back the exact canonical bytes, which are what is served
# and hashed. Packing works on a template's pieces as well as on whole lines (no fragment
# spans the numbers the scripts put in between), so the scripts only concatenate.
_FRAGMENTS: tuple[tuple[bytes, bool], ...] = (
    (b'{"at":"20', False),  # 1
    (b'Z","commit":"', True),  # 2: then 32 raw bytes for 64 hex digits
    (b'","country":', False),  # 3
    (b',"i":', False),  # 4
    (b',"kind":"endorse","name":', False),  # 5
    (b',"source":"', False),  # 6
    (b'","text":"', True),  # 7: then 32 raw bytes
    (b'"}', False),  # 8
    (b',"kind":"strike","reason":"', False),  # 9
    (b',"kind":"unstrike","target":', False),  # 10
    (b',"kind":"withdraw","target":', False),  # 11
    (b'Z","i":', False),  # 12
    (b'","target":', False),  # 13
    (b"https://", False),  # 14
    (b"direct", False),  # 15
    (b"null", False),  # 16
)
_PACK = re.compile(
    b"|".join(
        b"(" + re.escape(fragment) + (b"[0-9a-f]{64}" if digest else b"") + b")"
        for fragment, digest in _FRAGMENTS
    )
)
_UNPACK = re.compile(rb"([\x02\x07])(.{32})|([\x01-\x1f])", re.DOTALL)


def _pack_match(match: re.Match[bytes]) -> bytes:
    code = match.lastindex or 0
    fragment, digest = _FRAGMENTS[code - 1]
    packed = bytes([code])
    return packed + bytes.fromhex(match.group()[len(fragment) :].decode()) if digest else packed


def _unpack_match(match: re.Match[bytes]) -> bytes:
    if match.group(1) is not None:
        return _FRAGMENTS[match.group(1)[0] - 1][0] + match.group(2).hex().encode()
    return _FRAGMENTS[match.group(3)[0] - 1][0]


def _pack(line: bytes) -> bytes:
    """A line, or a piece of a template, as stored (see ``_FRAGMENTS``)."""
    return _PACK.sub(_pack_match, line)


def _unpack(stored: bytes) -> bytes:
    """The canonical line a stored one stands for."""
    return _UNPACK.sub(_unpack_match, stored)


def _minute(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(epoch))


def _entry(entry_id: Any, fields: Mapping[Any, Any], private: bytes | None = None) -> LogEntry:
    """A record row as a ``LogEntry``: the name and country from its private record (rows
    from before private records carry them inline)."""
    f = {_text(k): v for k, v in fields.items()}
    eid = _text(entry_id)
    if private is not None:
        name, country = private[18:].decode(), private[16:18].decode().strip()
    else:
        name, country = _text(f.get("n", b"")), _text(f.get("c", b""))
    return LogEntry(
        id=eid,
        time_ms=int(eid.split("-", 1)[0]),
        name=name,
        country=country,
        source=_text(f.get("s", b"direct")),
        public=_text(f.get("p", b"")) == "1",
        index=int(f["i"]) if "i" in f else None,
        confirmed=_text(f.get("k", b"")) == "1",
    )


def _counts(raw: Mapping[Any, Any]) -> dict[str, int]:
    pairs = ((_text(k), int(v)) for k, v in raw.items())
    return dict(sorted(((k, v) for k, v in pairs if v > 0), key=lambda kv: (-kv[1], kv[0])))


def _series(raw: Mapping[Any, Any], step: int, now: int, length: int | None) -> list[list[int]]:
    values = {int(k): int(v) for k, v in raw.items()}
    last = now - now % step
    if length is None:
        live = [k for k, v in values.items() if v > 0]
        if not live:
            return []
        first = max(min(live), last - 3650 * step)
    else:
        first = last - (length - 1) * step
    return [[t, max(values.get(t, 0), 0)] for t in range(first, last + step, step)]
