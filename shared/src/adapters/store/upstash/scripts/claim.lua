-- Claims one step: the job, its lease and every provider's state in one request.
-- The lease is the record's own header field (header.lua): a claim writes its end in place
-- (SETRANGE), a finish's new record or a purge drops it with the record. The job's due-index score
-- is not moved: a sweep that finds a due job whose lease is live moves it to the lease's end
-- (sweep.lua), and one whose lease lapsed (the step died) sends its step again.
-- KEYS[1] job record, KEYS[2] provider states hash
-- ARGV[1] gen, ARGV[2] seq, ARGV[3] the lease's end (epoch ms, 13 digits), ARGV[4] now (epoch ms,
-- the engine's clock)
-- Returns {'missing'} | {'stale', record} | {'busy', lease ms left} |
-- {'ok', record, {provider states}, {providers whose probe this claim took}}
-- An 'ok' claim's commands are counted in the budget by the finish of its step (budget.lua's carry).
-- The thundering herd: when a provider's cooldown after a rate limit, a quota or an overload has just
-- ended, this claim takes its probe (field pu = the lease's end) unless another claim holds it; the
-- engine holds the other claims back until the probe's lease ends (quota.rs hold_back_for_probes).
local v = C('GET', KEYS[1])
if not v then
  -- Purged or expired: a sweep drops whatever the index still holds for it.
  return {'missing'}
end
local state, gen, seq, _, _, lease = header(v)
if gen ~= ARGV[1] or seq ~= ARGV[2] then
  return {'stale', v}
end
local now = tonumber(ARGV[4])
if lease > now then
  return {'busy', lease - now}
end
if string.sub(v, 1, 2) == 'J2' then
  C('SETRANGE', KEYS[1], LEASE_AT, ARGV[3])
else
  -- A record written before the lease moved into the header: rewritten once in today's form.
  C('SET', KEYS[1], 'J2 ' .. ARGV[3] .. ' ' .. string.sub(v, 4), 'KEEPTTL')
end
local states = C('HGETALL', KEYS[2])
local probes = {}
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
      s.pu = tonumber(ARGV[3])
      local encoded = cjson.encode(s)
      C('HSET', KEYS[2], states[i], encoded)
      states[i + 1] = encoded
      probes[#probes + 1] = states[i]
    end
  end
end
BUDGET_CARRY = true
return {'ok', v, states, probes}
