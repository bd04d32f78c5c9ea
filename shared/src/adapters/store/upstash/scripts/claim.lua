-- Claims one step: the job, its lease and every provider's state in one request (the record and the
-- provider states in one MGET).
-- The lease is the record's own header field (header.lua): a claim writes its end in place
-- (SETRANGE), a finish's new record or a purge drops it with the record. The job's due-index score
-- is not moved: a sweep that finds a due job whose lease is live moves it to the lease's end
-- (sweep.lua), and one whose lease lapsed (the step died) sends its step again.
-- KEYS[1] job record, KEYS[2] provider states (st:pv: one JSON object, provider name → state)
-- ARGV[1] gen, ARGV[2] seq, ARGV[3] the lease's end (epoch ms, 13 digits), ARGV[4] now (epoch ms,
-- the engine's clock), ARGV[5] the reservable providers (JSON list of {p, rpm, tpm, rpd, d: today's
-- quota day}, the job's decision ranking) or '', ARGV[6] the job's tenant (its bookings' key)
-- Returns {'missing'} | {'stale', record} | {'busy', lease ms left} |
-- {'ok', record, provider states (the JSON object), {providers whose probe this claim took},
--  the provider whose request this claim reserved or whose turn it booked, or false;
--  the booked turn's instant (epoch ms) or false}
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
local booked = false
-- A finished job's steps are its deliveries: they call no provider, and reserve nothing.
if ARGV[5] ~= '' and not finished(state) then
  if all == nil then
    all = raw and cjson.decode(raw) or {}
  end
  local minute = math.floor(now / 60000)
  local took = {}
  for _, name in ipairs(probes) do took[name] = true end
  local ranked = cjson.decode(ARGV[5])
  local function over(window, used, limit, current)
    return type(limit) == 'number' and n(window) == current and n(used) >= limit
  end
  -- open_now, but for the minute's requests when `rpm` is false.
  local function open(s, r, rpm)
    return s.dis == nil and math.max(n(s.cu), n(s.co)) <= now
      and not (n(s.pu) > now and probed(s) and not took[r.p])
      and not over(s.mw, s.mc, rpm, minute) and not over(s.tw, s.tc, r.tpm, minute)
      and not over(s.dw, s.dc, r.rpd, r.d)
  end
  local function state(name)
    if type(all[name]) ~= 'table' then all[name] = {} end
    return all[name]
  end
  local found = false
  for _, r in ipairs(ranked) do
    local s = state(r.p)
    if open(s, r, r.rpm) then
      if type(r.rpm) == 'number' or type(r.rpd) == 'number' then
        if minute > n(s.mw) then s.mw = minute; s.mc = 1 elseif minute == n(s.mw) then s.mc = n(s.mc) + 1 end
        if r.d > n(s.dw) then s.dw = r.d; s.dc = 1 elseif r.d == n(s.dw) then s.dc = n(s.dc) + 1 end
        reserved = r.p
        changed = true
      end
      found = true
      break
    end
  end
  -- None can be called now: the job's turn on the first that is only out of this minute's requests
  -- (ProviderState::book: from the next minute on, each tenant's turns a request's share apart, times
  -- the tenants booking).
  if not found then
    for _, r in ipairs(ranked) do
      if type(r.rpm) == 'number' then
        local s = state(r.p)
        if over(s.mw, s.mc, r.rpm, minute) and open(s, r, false) then
          local q = {}
          local tenants = 0
          if type(s.q) == 'table' then
            for t, from in pairs(s.q) do
              if tonumber(from) > now then q[t] = tonumber(from); tenants = tenants + 1 end
            end
          end
          local tenant = ARGV[6]
          if q[tenant] == nil then tenants = tenants + 1 end
          local spacing = math.ceil(60000 / math.max(r.rpm, 1)) * tenants
          local at = math.max(q[tenant] or 0, (minute + 1) * 60000)
          q[tenant] = at + spacing
          s.q = q
          reserved = r.p
          booked = at
          changed = true
          break
        end
      end
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
return {'ok', v, raw or false, probes, reserved, booked}
