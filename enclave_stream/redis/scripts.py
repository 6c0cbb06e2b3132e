"""The Lua scripts that change a session's keys, each one atomic on one cluster slot.

Every key a script touches is one session's (:class:`~.keys.SessionKeys`),
so a script runs on one node of a cluster. Stream entry ids are
``<seq>-0``: Redis refuses an id at or below the stream's top, which fences
off any second writer. Numbers are written with ``%d``: Lua's own number
formatting turns large integers into exponents.
"""

from __future__ import annotations

__all__ = ["CANCEL", "CLAIM", "FLUSH", "LOSE", "RECOVERY", "RELEASE", "STATUS"]

from typing import Final

_HELPERS: Final = """
local function int(n) return string.format('%d', n) end
"""

FLUSH: Final = (
    _HELPERS
    + """
-- KEYS: log, meta, lease, wake channel (a key name, for its hash tag)
-- ARGV: owner, mode ('append' | 'repair'), first seq of the lines, ending
-- ('' | 'final' | 'close'), max_events, max_bytes, ttl_ms, lease_ms,
-- encrypted ('0' | '1'), ServerHello header, claimed ('0' | '1'), the
-- creator's grant (JSON), lines...
-- Returns {status, top, first held, cancel asked}: OK, LOST (the session was
-- in Redis and is gone: the owner repairs), FENCED (another owner, or
-- ended by readers as lost), GAP.
local log, meta, lease, wake = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local owner, mode, first, ending = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local max_events, max_bytes = tonumber(ARGV[5]), tonumber(ARGV[6])
local ttl, lease_ms = tonumber(ARGV[7]), tonumber(ARGV[8])
local n = #ARGV - 12

local held = redis.call('HMGET', meta, 'owner', 'state', 'top', 'first', 'bytes', 'lost')
local top, head, bytes
-- Claimed by this owner (CLAIM) but not written yet: a new session.
if not held[1] or (held[1] == owner and not held[2]) then
  if ARGV[11] == '1' and mode ~= 'repair' then return {'LOST', 0, 0} end
  -- A new session, or one the owner puts back after Redis lost it.
  redis.call('DEL', log)
  top, head, bytes = first - 1, first, 0
  local now = redis.call('TIME')
  redis.call('HSET', meta, 'owner', owner, 'state', 'running', 'enc', ARGV[9],
    'hello', ARGV[10], 'grant', ARGV[12], 'created', int(now[1] * 1000 + math.floor(now[2] / 1000)))
else
  -- Readers ended it (the owner's lease had lapsed): a slow owner must not
  -- write after their final, nor take its seq for one of its own.
  if held[1] ~= owner or held[2] == 'lost' or held[6] then
    return {'FENCED', tonumber(held[3]), tonumber(held[4])}
  end
  top, head, bytes = tonumber(held[3]), tonumber(held[4]), tonumber(held[5])
end

-- A batch sent again (its reply was lost) holds lines already stored.
local skip = 0
if first <= top then skip = top - first + 1 end
if first + skip ~= top + 1 then
  if mode ~= 'repair' then return {'GAP', top, head} end
  -- Redis holds less than the owner wrote (a failover to a lagging replica):
  -- start again from what the owner holds.
  redis.call('DEL', log)
  top, head, bytes, skip = first - 1, first, 0, 0
end
for i = skip + 1, n do
  local line = ARGV[12 + i]
  local id = int(first + i - 1) .. '-0'
  if i == n and ending == 'final' then
    redis.call('XADD', log, id, 'l', line, 'f', '1')
  else
    redis.call('XADD', log, id, 'l', line)
  end
  bytes = bytes + #line
end
if n > skip then top = first + n - 1 end

-- Trim the oldest lines past either bound; the newest one always stays.
while head < top and (top - head + 1 > max_events or bytes > max_bytes) do
  local want = math.max(top - head + 1 - max_events, 8)
  local oldest = redis.call('XRANGE', log, int(head) .. '-0', '+', 'COUNT', math.min(want, 256))
  if #oldest == 0 then break end
  for _, entry in ipairs(oldest) do
    if head >= top or not (top - head + 1 > max_events or bytes > max_bytes) then break end
    bytes = bytes - #entry[2][2]
    head = head + 1
  end
  redis.call('XTRIM', log, 'MINID', int(head) .. '-0')
end

redis.call('HSET', meta, 'top', int(top), 'first', int(head), 'bytes', int(bytes))
if ending ~= '' then
  redis.call('HSET', meta, 'state', 'finished', 'end', int(top))
  redis.call('DEL', lease)
else
  redis.call('SET', lease, owner, 'PX', lease_ms)
end
redis.call('PEXPIRE', meta, ttl)
if top >= head then redis.call('PEXPIRE', log, ttl) end
if n > skip or ending ~= '' then redis.call('PUBLISH', wake, int(top)) end
-- A replica that does not hold the session asked for its cancellation.
local cancel = 0
if redis.call('HGET', meta, 'cancel') then cancel = 1 end
return {'OK', top, head, cancel}
"""
)
"""Append a batch of lines (or repair a lost session), trim, refresh the TTL and the lease."""

STATUS: Final = """
-- KEYS: meta, lease. What a reader needs, in one consistent snapshot.
local held = redis.call('HMGET', KEYS[1], 'state', 'top', 'first', 'end', 'enc', 'hello', 'grant')
table.insert(held, redis.call('EXISTS', KEYS[2]))
return held
"""
"""A session's state: ``{state, top, first, end, enc, hello, grant, leased}`` (nils: unknown)."""

LOSE: Final = (
    _HELPERS
    + """
-- KEYS: log, meta, lease, wake channel. ARGV: the top the caller saw, the
-- failed final's line ('' for an encrypted session: nobody else can seal),
-- ttl_ms. Ends a running session whose owner's lease expired.
local log, meta, lease, wake = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if redis.call('EXISTS', lease) == 1 then return 'ALIVE' end
local held = redis.call('HMGET', meta, 'state', 'top', 'bytes')
if not held[1] then return 'MISSING' end
if held[1] ~= 'running' then return held[1] end
local top = tonumber(held[2])
if top ~= tonumber(ARGV[1]) then return 'MOVED' end
if ARGV[2] ~= '' then
  -- The next id: the owner, were it alive after all, can no longer write it.
  redis.call('XADD', log, int(top + 1) .. '-0', 'l', ARGV[2], 'f', '1')
  redis.call('HSET', meta, 'state', 'finished', 'top', int(top + 1), 'end', int(top + 1),
    'bytes', int(tonumber(held[3]) + #ARGV[2]), 'lost', '1')
  redis.call('PEXPIRE', log, tonumber(ARGV[3]))
else
  redis.call('HSET', meta, 'state', 'lost')
end
redis.call('PEXPIRE', meta, tonumber(ARGV[3]))
redis.call('PUBLISH', wake, 'lost')
return 'LOST'
"""
)
"""End a session whose owner is gone: a failed ``final`` (plain) or the ``lost`` state."""

RECOVERY: Final = (
    _HELPERS
    + """
-- KEYS: the recovery key. Returns how many ms ago it was set; sets it (and
-- returns 0) when missing: Redis is new, or restarted without its data.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local since = redis.call('GET', KEYS[1])
if not since then
  redis.call('SET', KEYS[1], int(now))
  return 0
end
return math.max(0, now - tonumber(since))
"""
)
"""How long ago Redis was found without its recovery key (0: just now)."""

CANCEL: Final = """
-- KEYS: meta, wake channel. Asks the owner of a running session to cancel it
-- (its next write, or lease renewal, reads the request).
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'MISSING' end
if state ~= 'running' then return state end
redis.call('HSET', KEYS[1], 'cancel', '1')
redis.call('PUBLISH', KEYS[2], 'cancel')
return 'ASKED'
"""
"""Ask a running session's owner to cancel it: ``ASKED``, ``MISSING`` or the state it is in."""

CLAIM: Final = """
-- KEYS: meta. ARGV: owner, ttl_ms. Reserves a session id a client chose:
-- 1, or 0 when a session (or another claim) holds it.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'owner', ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""
"""Reserve a session id for its creator: ``1``, or ``0`` when it is taken."""

RELEASE: Final = """
-- KEYS: meta. ARGV: owner. Gives back a claim nothing was written under.
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner == ARGV[1] and redis.call('HEXISTS', KEYS[1], 'state') == 0 then
  redis.call('DEL', KEYS[1])
end
return 1
"""
"""Give back a :data:`CLAIM` whose session was not created after all."""
