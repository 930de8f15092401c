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

Stream entries hold ``h`` (email HMAC), ``n`` (display name), ``c`` (country or ""),
``s`` (source origin or "direct") and ``p`` ("1" when the endorser chose to be shown).
No raw email or IP address is ever passed to this module.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from redis import Redis
from redis.cluster import RedisCluster

RedisClient = Redis | RedisCluster
EndorseStatus = Literal["counted", "duplicate", "closed"]
TIMELINE_BUCKETS: Mapping[str, int] = {"m": 60, "h": 3600, "d": 86400}
ENTRY_ID = re.compile(r"\d{1,20}-\d{1,20}")

# One atomic step: refuse when closed, dedup on the email HMAC, append to the log,
# bump the count and every breakdown, publish the new count.
ENDORSE_LUA = """
local count_key, seen, log = KEYS[1], KEYS[2], KEYS[3]
local by_source, by_country = KEYS[4], KEYS[5]
local tl_m, tl_h, tl_d, state = KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local hmac, name, country = ARGV[1], ARGV[2], ARGV[3]
local source, public, channel = ARGV[4], ARGV[5], ARGV[6]
local current = tonumber(redis.call('GET', count_key) or '0')
if redis.call('HGET', state, 'closed') == '1' then
  return {'closed', current, ''}
end
local prior = redis.call('HGET', seen, hmac)
if prior then
  return {'duplicate', current, prior}
end
local id = redis.call('XADD', log, '*',
  'h', hmac, 'n', name, 'c', country, 's', source, 'p', public)
redis.call('HSET', seen, hmac, id)
local count = redis.call('INCR', count_key)
redis.call('HINCRBY', by_source, source, 1)
if country ~= '' then redis.call('HINCRBY', by_country, country, 1) end
local sec = math.floor(tonumber(string.match(id, '^(%d+)-')) / 1000)
redis.call('HINCRBY', tl_m, sec - sec % 60, 1)
redis.call('HINCRBY', tl_h, sec - sec % 3600, 1)
redis.call('HINCRBY', tl_d, sec - sec % 86400, 1)
redis.call('PUBLISH', channel, count)
return {'counted', count, id}
"""


# Strike or un-strike one logged endorsement atomically: the count, every breakdown and
# the timeline buckets of its time follow; the new count is published. Idempotent.
MODERATE_LUA = """
local count_key, log, by_source, by_country = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local tl_m, tl_h, tl_d, struck = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local id, mode, record, channel = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local current = tonumber(redis.call('GET', count_key) or '0')
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
local fields = rows[1][2]
local f = {}
for i = 1, #fields, 2 do f[fields[i]] = fields[i + 1] end
local count = redis.call('INCRBY', count_key, delta)
local function bump(key, field)
  if redis.call('HINCRBY', key, field, delta) <= 0 then redis.call('HDEL', key, field) end
end
bump(by_source, f['s'] or 'direct')
if f['c'] and f['c'] ~= '' then bump(by_country, f['c']) end
local sec = math.floor(tonumber(string.match(id, '^(%d+)-')) / 1000)
bump(tl_m, tostring(sec - sec % 60))
bump(tl_h, tostring(sec - sec % 3600))
bump(tl_d, tostring(sec - sec % 86400))
redis.call('PUBLISH', channel, count)
return {'changed', count}
"""


@dataclass(frozen=True)
class Endorsement:
    """What one person gives: already validated, email already reduced to its HMAC."""

    email_hmac: str
    name: str
    country: str = ""
    source: str = "direct"
    public: bool = False


@dataclass(frozen=True)
class EndorseResult:
    status: EndorseStatus
    count: int
    entry_id: str


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


class Store:
    """Statements' counts and endorsements in Redis, through atomic scripts."""

    def __init__(self, redis: RedisClient, prefix: str = "us") -> None:
        self.redis = redis
        self.prefix = prefix
        self._endorse = redis.register_script(ENDORSE_LUA)

    # -- key names -------------------------------------------------------------------
    def key(self, statement_id: str, name: str) -> str:
        return f"{self.prefix}:{{{statement_id}}}:{name}"

    def channel(self, statement_id: str) -> str:
        return self.key(statement_id, "events")

    def statement_id_from_channel(self, channel: str) -> str:
        return channel.split("{", 1)[1].split("}", 1)[0]

    # -- reads -----------------------------------------------------------------------
    def ping(self) -> bool:
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
            for entry_id, fields in rows:
                yield _entry(entry_id, fields or {})
            if len(rows) < batch:
                return
            last = _text(rows[-1][0])
            cursor = "(" + last

    # -- writes ----------------------------------------------------------------------
    def endorse(self, statement_id: str, endorsement: Endorsement) -> EndorseResult:
        keys = [
            self.key(statement_id, name)
            for name in (
                "count",
                "seen",
                "log",
                "by_source",
                "by_country",
                "tl:m",
                "tl:h",
                "tl:d",
                "state",
            )
        ]
        args = [
            endorsement.email_hmac,
            endorsement.name,
            endorsement.country,
            endorsement.source,
            "1" if endorsement.public else "0",
            self.channel(statement_id),
        ]
        status, count, entry_id = self._endorse(keys=keys, args=args)
        return EndorseResult(status=_text(status), count=int(count), entry_id=_text(entry_id))  # type: ignore[arg-type]

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
        self, statement_id: str, entry_id: str, mode: str, record: str
    ) -> tuple[bool, int]:
        if not ENTRY_ID.fullmatch(entry_id):
            raise KeyError(entry_id)
        keys = [
            self.key(statement_id, name)
            for name in (
                "count",
                "log",
                "by_source",
                "by_country",
                "tl:m",
                "tl:h",
                "tl:d",
                "struck",
            )
        ]
        args = [entry_id, mode, record, self.channel(statement_id)]
        status, count = self._moderate_script(keys=keys, args=args)
        if _text(status) == "missing":
            raise KeyError(entry_id)
        return _text(status) == "changed", int(count)

    @property
    def _moderate_script(self) -> Any:
        script = self.__dict__.get("_moderate_lua")
        if script is None:
            script = self.__dict__["_moderate_lua"] = self.redis.register_script(MODERATE_LUA)
        return script

    def strike(
        self, statement_id: str, entry_id: str, by: str, reason: str = ""
    ) -> tuple[bool, int]:
        """Take an endorsement out of the count and every breakdown; it stays in the log,
        marked struck with who/when/why. Idempotent; ``KeyError`` for an unknown entry."""
        record = json.dumps({"by": by, "at": int(time.time()), "reason": reason})
        return self._moderate(statement_id, entry_id, "strike", record)

    def unstrike(self, statement_id: str, entry_id: str) -> tuple[bool, int]:
        """Put a struck endorsement back into the count and breakdowns. Idempotent."""
        return self._moderate(statement_id, entry_id, "unstrike", "")

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
        if cursor is not None and not ENTRY_ID.fullmatch(cursor):
            raise ValueError(f"bad cursor {cursor!r}")
        top = "+" if cursor is None else "(" + cursor
        rows = self.redis.xrevrange(
            self.key(statement_id, "log"), max=top, min="-", count=limit + 1
        )
        rows = list(rows or [])
        more = len(rows) > limit
        entries = [_entry(eid, fields or {}) for eid, fields in rows[:limit]]
        if entries:
            marks = self.redis.hmget(self.key(statement_id, "struck"), [e.id for e in entries])
            entries = [
                LogEntry(**{**e.__dict__, "struck": json.loads(m)}) if m else e
                for e, m in zip(entries, marks, strict=True)
            ]
        return entries, (entries[-1].id if more and entries else None)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry(entry_id: Any, fields: Mapping[Any, Any]) -> LogEntry:
    f = {_text(k): _text(v) for k, v in fields.items()}
    eid = _text(entry_id)
    return LogEntry(
        id=eid,
        time_ms=int(eid.split("-", 1)[0]),
        name=f.get("n", ""),
        country=f.get("c", ""),
        source=f.get("s", "direct"),
        public=f.get("p") == "1",
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
