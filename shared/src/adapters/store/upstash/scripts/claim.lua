-- Claims one step: the job, its lease and every provider's state in one request (the record and the
-- provider states in one MGET).
-- The lease is the record's own header field (header.lua): a claim writes its end in place
-- (SETRANGE), a finish's new record or a purge drops it with the record. The job's due-index score
-- is not moved: a sweep that finds a due job whose lease is live moves it to the lease's end
-- (sweep.lua), and one whose lease lapsed (the step died) sends its step again.
-- KEYS[1] job record, KEYS[2] provider states (st:pv: one JSON object, provider name → state)
-- ARGV[1] gen, ARGV[2] seq, ARGV[3] the lease's end (epoch ms, 13 digits), ARGV[4] now (epoch ms,
-- the engine's clock), ARGV[5] the reservable providers (JSON list of {p, rpm, tpm, rpd, d: today's
-- quota day}, the job's decision ranking) or '', ARGV[6] the job's tenant (its bookings' key),
-- ARGV[7] the job's owner, ARGV[8] its job id (the step a hand-over wakes is named by them),
-- ARGV[9] PRIORITY_LEAD_MS (job.rs), ARGV[10] GRANT_MS and ARGV[11] MAX_JUMPERS (quota.rs)
-- Returns {'missing'} | {'stale', record} | {'busy', lease ms left} |
-- {'ok', record, provider states (the JSON object), {providers whose probe this claim took},
--  the provider whose request this claim reserved or whose turn it booked, or false;
--  the booked turn's instant (epoch ms) or false;
--  the step the reserved request was handed to {owner, job id, gen, seq} (its turn: the booked instant) or false}
-- Priority within a tenant (quota.rs reserve, rule for rule): a request handed over to this job (the
-- state's `g`) is its reservation, counted already; a job that reserves while a job of its tenant
-- ahead of it in the line waits as a jumper (`h`) hands the request over and takes that job's turn; a
-- job booked behind its tenant's lower-priority turns waits as a jumper. The record's JSON is walked
-- (scripts/json.lua) only when that can matter: jumpers listed, low turns held, or a priority named.
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
local handed = false
-- The claiming job as the turns' priority sees it (quota::Claimant), read from the record once.
local claimant = nil
local function me()
  if claimant == nil then
    local start = json_start(v)
    local spec = start and member(v, start, 'spec')
    local named = start and tenant_name(v, spec) or ''
    local created = start and member(v, start, 'created_at_ms')
    local at = spec and member(v, spec, 'priority')
    local priority = at and string.match(v, '^"(%a+)"', at) or 'normal'
    local lead = tonumber(ARGV[9])
    local line = tonumber(created and string.match(v, '^%d+', created) or '0')
    if priority == 'high' then line = line - lead elseif priority == 'low' then line = line + lead end
    claimant = {
      tenant = named ~= '' and (ARGV[7] .. '/' .. named) or ARGV[7],
      line = line,
      priority = priority,
    }
  end
  return claimant
end
local function empty(t)
  return type(t) ~= 'table' or next(t) == nil
end
-- ProviderState::drop_past_jumpers.
local function drop_past(s)
  if not empty(s.h) then
    for t, list in pairs(s.h) do
      local kept = {}
      for _, j in ipairs(list) do
        if tonumber(j.a) > now then kept[#kept + 1] = j end
      end
      s.h[t] = #kept > 0 and kept or nil
    end
  end
  if empty(s.h) then s.h = nil end
  if not empty(s.lw) then
    for t, at in pairs(s.lw) do
      if tonumber(at) <= now then s.lw[t] = nil end
    end
  end
  if empty(s.lw) then s.lw = nil end
end
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
  -- A request handed over to this job earlier: its reservation, counted already.
  for _, r in ipairs(ranked) do
    local s = all[r.p]
    if type(s) == 'table' and not empty(s.g) then
      for k, until_ms in pairs(s.g) do
        if tonumber(until_ms) <= now then s.g[k] = nil; changed = true end
      end
      if s.g[KEYS[1]] then
        s.g[KEYS[1]] = nil
        reserved = r.p
        found = true
        changed = true
      end
      if empty(s.g) then s.g = nil end
      if found then break end
    end
  end
  for _, r in ipairs(found and {} or ranked) do
    local s = state(r.p)
    if open(s, r, r.rpm) then
      if type(r.rpm) == 'number' or type(r.rpd) == 'number' then
        if minute > n(s.mw) then s.mw = minute; s.mc = 1 elseif minute == n(s.mw) then s.mc = n(s.mc) + 1 end
        if r.d > n(s.dw) then s.dw = r.d; s.dc = 1 elseif r.d == n(s.dw) then s.dc = n(s.dc) + 1 end
        reserved = r.p
        changed = true
        -- ProviderState::hand_over: the jumper of this job's tenant furthest ahead in the line, when it
        -- is ahead of this job, gets the request; this job takes its turn.
        if not empty(s.h) then
          drop_past(s)
          local list = s.h and s.h[me().tenant]
          local best = nil
          for i, j in ipairs(list or {}) do
            if tonumber(j.l) < me().line and j.k ~= KEYS[1] then
              if best == nil or tonumber(j.l) < tonumber(list[best].l)
                  or (tonumber(j.l) == tonumber(list[best].l) and tonumber(j.a) < tonumber(list[best].a)) then
                best = i
              end
            end
          end
          if best then
            local j = table.remove(list, best)
            if #list == 0 then s.h[me().tenant] = nil end
            if empty(s.h) then s.h = nil end
            if type(s.g) ~= 'table' then s.g = {} end
            s.g[j.k] = now + tonumber(ARGV[10])
            booked = tonumber(j.a)
            handed = {j.o, j.i, j.g, tostring(j.s)}
          end
        end
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
          local ahead = q[tenant] ~= nil
          if q[tenant] == nil then tenants = tenants + 1 end
          local spacing = math.ceil(60000 / math.max(r.rpm, 1)) * tenants
          local at = math.max(q[tenant] or 0, (minute + 1) * 60000)
          q[tenant] = at + spacing
          s.q = q
          reserved = r.p
          booked = at
          changed = true
          -- ProviderState::wait_to_jump (the record is read only when a priority is named or low turns
          -- are held: a normal job behind none waits as it booked).
          if string.find(v, '"priority":"', 1, true) or not empty(s.lw) then
            drop_past(s)
            local mine = me()
            if mine.priority == 'low' then
              if type(s.lw) ~= 'table' then s.lw = {} end
              s.lw[mine.tenant] = math.max(tonumber(s.lw[mine.tenant] or 0), at)
            else
              local below = mine.priority == 'high' or (s.lw ~= nil and tonumber(s.lw[mine.tenant] or 0) > now)
              local held = 0
              for _, list in pairs(s.h or {}) do held = held + #list end
              if ahead and below and held < tonumber(ARGV[11]) then
                if type(s.h) ~= 'table' then s.h = {} end
                local list = s.h[mine.tenant] or {}
                list[#list + 1] = {k = KEYS[1], o = ARGV[7], i = ARGV[8], g = ARGV[1], s = tonumber(ARGV[2]) + 1,
                  a = at, l = mine.line}
                s.h[mine.tenant] = list
              end
            end
          end
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
return {'ok', v, raw or false, probes, reserved, booked, handed}
