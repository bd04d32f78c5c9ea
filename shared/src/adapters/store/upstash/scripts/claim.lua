-- Claims one step (issue 17): the job, its lease and every provider's state in one command.
-- The lease is one key per job (st:l:<owner>:<id>, value "<gen>:<seq>"), deleted by finish and purge,
-- so a purged job leaves nothing behind. A claim moves the job's due-index score to the lease's end:
-- should the step die (or this claim land after its caller gave up waiting), the sweeper finds the
-- job due once the lease has lapsed and sends its step again.
-- KEYS[1] job record, KEYS[2] the job's lease, KEYS[3] provider states hash, KEYS[4] the due-index
-- ARGV[1] gen, ARGV[2] seq, ARGV[3] lease (ms), ARGV[4] the lease's end (epoch ms, the due score),
-- ARGV[5] now (epoch ms, the engine's clock)
-- Returns {'missing'} | {'stale', record} | {'busy', lease ms left} |
-- {'ok', record, {provider states}, {providers whose probe this claim took}}
-- The thundering herd: when a provider's cooldown after a rate limit, a quota or an overload has just
-- ended, this claim takes its probe (field pu = the lease's end) unless another claim holds it; the
-- engine holds the other claims back until the probe's lease ends (quota.rs hold_back_for_probes).
local v = C('GET', KEYS[1])
if not v then
  -- Purged or expired: whatever the index still holds for it goes now.
  C('ZREM', KEYS[4], KEYS[1])
  return {'missing'}
end
local gen, seq, expires = string.match(v, '^J1 %a (%x+) (%d+) (%d+)')
if gen ~= ARGV[1] or seq ~= ARGV[2] then
  return {'stale', v}
end
local token = ARGV[1] .. ':' .. ARGV[2]
local held = C('SET', KEYS[2], token, 'NX', 'GET', 'PX', ARGV[3])
if held then
  if held == token then
    return {'busy', C('PTTL', KEYS[2])}
  end
  -- A lease naming another step cannot block this one (finish deletes it; this is a leftover).
  C('SET', KEYS[2], token, 'PX', ARGV[3])
end
-- (The job is in the index, which lives at least as long as the job: no expiry to extend here.)
C('ZADD', KEYS[4], ARGV[4], KEYS[1])
local states = C('HGETALL', KEYS[3])
local probes = {}
local now = tonumber(ARGV[5])
local function n(x)
  return tonumber(x) or 0
end
for i = 1, #states, 2 do
  local raw = states[i + 1]
  -- Cheap test first: only states that name a probed class are decoded.
  if string.find(raw, '"lc":"rate_limited"', 1, true) or string.find(raw, '"lc":"quota_exhausted"', 1, true)
      or string.find(raw, '"lc":"overloaded"', 1, true) then
    local s = cjson.decode(raw)
    local ends = math.max(n(s.cu), n(s.co))
    if ends > 0 and ends <= now and n(s.pu) <= now then
      s.pu = tonumber(ARGV[4])
      local encoded = cjson.encode(s)
      C('HSET', KEYS[3], states[i], encoded)
      states[i + 1] = encoded
      probes[#probes + 1] = states[i]
    end
  end
end
return {'ok', v, states, probes}
