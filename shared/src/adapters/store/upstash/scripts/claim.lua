-- Claims one step: the job, its lease and every provider's state in one request (the record and the
-- provider states in one MGET).
-- The lease is the record's own header field (header.lua): a claim writes its end in place
-- (SETRANGE), a finish's new record or a purge drops it with the record. The job's due-index score
-- is not moved: a sweep that finds a due job whose lease is live moves it to the lease's end
-- (sweep.lua), and one whose lease lapsed (the step died) sends its step again.
-- KEYS[1] job record, KEYS[2] provider states (st:pv: one JSON object, provider name → state)
-- ARGV[1] gen, ARGV[2] seq, ARGV[3] the lease's end (epoch ms, 13 digits), ARGV[4] now (epoch ms,
-- the engine's clock), ARGV[5] the reservable providers (JSON list of {p, rpm, tpm, rpd, d: today's
-- quota day}, the job's decision ranking) or ''
-- Returns {'missing'} | {'stale', record} | {'busy', lease ms left} |
-- {'ok', record, provider states (the JSON object), {providers whose probe this claim took},
--  the provider whose request this claim reserved or false}
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
local function probed(s)
  return s.lc == 'rate_limited' or s.lc == 'quota_exhausted' or s.lc == 'overloaded'
end
local all = nil
local changed = false
-- Cheap test first: the states are decoded only when one names a probed class, or a reservation asks.
if raw and (string.find(raw, '"lc":"rate_limited"', 1, true) or string.find(raw, '"lc":"quota_exhausted"', 1, true)
    or string.find(raw, '"lc":"overloaded"', 1, true)) then
  all = cjson.decode(raw)
  for name, s in pairs(all) do
    if type(s) == 'table' and probed(s) then
      local ends = math.max(n(s.cu), n(s.co))
      if ends > 0 and ends <= now and n(s.pu) <= now then
        s.pu = tonumber(ARGV[3])
        probes[#probes + 1] = name
        changed = true
      end
    end
  end
end
-- The reservation (quota.rs reserve and ProviderState::open_now, rule for rule): a request of the first
-- ranked provider that can be called now, when it has a shared request limit, counted in its minute
-- and day here, so claims racing for a minute's last request cannot all take it.
local reserved = false
if ARGV[5] ~= '' then
  if all == nil then
    all = raw and cjson.decode(raw) or {}
  end
  local minute = math.floor(now / 60000)
  local took = {}
  for _, name in ipairs(probes) do took[name] = true end
  for _, r in ipairs(cjson.decode(ARGV[5])) do
    local s = all[r.p]
    if type(s) ~= 'table' then s = {} end
    local function over(window, used, limit, current)
      return type(limit) == 'number' and n(window) == current and n(used) >= limit
    end
    local open = s.dis == nil and math.max(n(s.cu), n(s.co)) <= now
      and not (n(s.pu) > now and probed(s) and not took[r.p])
      and not over(s.mw, s.mc, r.rpm, minute) and not over(s.tw, s.tc, r.tpm, minute)
      and not over(s.dw, s.dc, r.rpd, r.d)
    if open then
      if type(r.rpm) == 'number' or type(r.rpd) == 'number' then
        if minute > n(s.mw) then s.mw = minute; s.mc = 1 elseif minute == n(s.mw) then s.mc = n(s.mc) + 1 end
        if r.d > n(s.dw) then s.dw = r.d; s.dc = 1 elseif r.d == n(s.dw) then s.dc = n(s.dc) + 1 end
        all[r.p] = s
        reserved = r.p
        changed = true
      end
      break
    end
  end
end
if changed then
  if raw then
    raw = cjson.encode(all)
    C('SET', KEYS[2], raw, 'KEEPTTL')
  else
    -- No states yet (or all expired): they live as finish.lua keeps them.
    raw = cjson.encode(all)
    C('SET', KEYS[2], raw, 'PX', 8 * 86400000)
  end
end
BUDGET_CARRY = true
return {'ok', v, raw or false, probes, reserved}
