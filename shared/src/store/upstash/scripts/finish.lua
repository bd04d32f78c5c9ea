-- Ends one step: writes the job's next state if the job is still at that step, and folds the
-- attempt into its provider's shared state. One request, atomic.
-- The step's lease goes, and the job's due-index entry moves to when its next step is due (or
-- leaves the index when nothing is left to do).
-- KEYS[1] job record, KEYS[2] provider states hash, KEYS[3] the owner's jobs in flight (st:f:<owner>),
-- KEYS[4] the job's lease, KEYS[5] the due-index
-- ARGV[1] next record, ARGV[2] expected gen, ARGV[3] expected seq, ARGV[4] next expiry (epoch ms),
-- ARGV[5] provider event (JSON) or '', ARGV[6] job id, ARGV[7] next due score (epoch ms) or ''
-- Returns 1 when written, 0 when the job moved on (nothing changed) or is gone.

check_expiry(ARGV[4], 'job', 0)
-- The due-index lives as long as its longest-lived job (a set re-created without expiry gets one).
local function due_add(key, score, member, expiry)
  redis.call('ZADD', key, score, member)
  if redis.call('PTTL', key) < 0 then
    redis.call('PEXPIREAT', key, expiry)
  else
    redis.call('PEXPIREAT', key, expiry, 'GT')
  end
end


-- Swap first (one command on the common path), check the fencing token on what was there.
local old = redis.call('SET', KEYS[1], ARGV[1], 'XX', 'GET', 'PXAT', ARGV[4])
if not old then
  return 0
end
local was, gen, seq, expires = string.match(old, '^J1 (%a) (%x+) (%d+) (%d+)[ \n]')
if gen ~= ARGV[2] or seq ~= ARGV[3] then
  -- A stale step: put back what was there, with its own expiry.
  redis.call('SET', KEYS[1], old, 'PXAT', expires)
  return 0
end
local becomes = string.sub(ARGV[1], 4, 4)
if (becomes == 's' or becomes == 'f') and was ~= 's' and was ~= 'f' then
  -- The job just finished: it leaves its owner's jobs in flight.
  redis.call('ZREM', KEYS[3], ARGV[6])
end
redis.call('DEL', KEYS[4])
if ARGV[7] == '' then
  redis.call('ZREM', KEYS[5], KEYS[1])
else
  due_add(KEYS[5], ARGV[7], KEYS[1], ARGV[4])
end
if ARGV[5] == '' then
  return 1
end

-- The same rules as ProviderState::apply in quota.rs.
local e = cjson.decode(ARGV[5])
local raw = redis.call('HGET', KEYS[2], e.provider)
local s = {}
if raw then
  s = cjson.decode(raw)
end
local function n(x)
  return tonumber(x) or 0
end
if n(s.mw) == e.minute then s.mc = n(s.mc) + 1 else s.mw = e.minute; s.mc = 1 end
if n(s.tw) == e.minute then s.tc = n(s.tc) + e.tokens else s.tw = e.minute; s.tc = e.tokens end
local new_day = n(s.dw) ~= e.day
if new_day then s.dw = e.day; s.dc = 1 else s.dc = n(s.dc) + 1 end
s.cu = math.max(n(s.cu), e.cooldown_until_ms)
s.cf = n(s.cf)
s.co = n(s.co)
local class = e.class
if class == cjson.null or class == nil then
  s.cf = 0
  s.co = 0
  class = 'ok'
elseif class == 'overloaded' then
  s.cf = s.cf + 1
  local backoff = math.min(e.backoff.base_ms * 2 ^ math.min(s.cf - 1, 20), e.backoff.cap_ms)
  s.cu = math.max(s.cu, e.now_ms + backoff)
  if s.cf >= e.backoff.circuit_threshold then
    s.co = e.now_ms + e.backoff.circuit_open_ms
  end
elseif class == 'auth_invalid' or class == 'gone' then
  s.dis = e.message
end
s.lc = class
s.la = e.now_ms
redis.call('HSET', KEYS[2], e.provider, cjson.encode(s))
if new_day then
  -- Provider state is a handful of fields; it still expires if every instance goes quiet.
  redis.call('PEXPIRE', KEYS[2], 8 * 86400000)
end
return 1
