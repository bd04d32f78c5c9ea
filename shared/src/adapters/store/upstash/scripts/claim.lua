-- Claims one step: the job, its lease and every provider's state in one request (the record and the
-- provider states in one MGET).
-- The lease is the record's own header field (header.lua): a claim writes its end in place
-- (SETRANGE), a finish's new record or a purge drops it with the record. The job's due-index score
-- is not moved: a sweep that finds a due job whose lease is live moves it to the lease's end
-- (sweep.lua), and one whose lease lapsed (the step died) sends its step again.
-- KEYS[1] job record, KEYS[2] provider states (st:pv: one JSON object, provider name → state)
-- ARGV[1] gen, ARGV[2] seq, ARGV[3] the lease's end (epoch ms, 13 digits), ARGV[4] now (epoch ms,
-- the engine's clock)
-- Returns {'missing'} | {'stale', record} | {'busy', lease ms left} |
-- {'ok', record, provider states (the JSON object), {providers whose probe this claim took}}
-- An 'ok' claim's commands are counted in the budget by the finish of its step (budget.lua's carry).
-- The thundering herd: when a provider's cooldown after a rate limit, a quota or an overload has just
-- ended, this claim takes its probe (field pu = the lease's end) unless another claim holds it; the
-- engine holds the other claims back for about two of the provider's calls, then they look again, never
-- past the probe's lease (quota.rs hold_back_for_probes).
local got = C('MGET', KEYS[1], KEYS[2])
local v, raw = got[1], got[2]
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
local probes = {}
local function n(x)
  return tonumber(x) or 0
end
-- Cheap test first: the states are decoded only when one names a probed class.
if raw and (string.find(raw, '"lc":"rate_limited"', 1, true) or string.find(raw, '"lc":"quota_exhausted"', 1, true)
    or string.find(raw, '"lc":"overloaded"', 1, true)) then
  local all = cjson.decode(raw)
  for name, s in pairs(all) do
    if type(s) == 'table' and (s.lc == 'rate_limited' or s.lc == 'quota_exhausted' or s.lc == 'overloaded') then
      local ends = math.max(n(s.cu), n(s.co))
      if ends > 0 and ends <= now and n(s.pu) <= now then
        s.pu = tonumber(ARGV[3])
        probes[#probes + 1] = name
      end
    end
  end
  if #probes > 0 then
    raw = cjson.encode(all)
    C('SET', KEYS[2], raw, 'KEEPTTL')
  end
end
BUDGET_CARRY = true
return {'ok', v, raw or false, probes}
