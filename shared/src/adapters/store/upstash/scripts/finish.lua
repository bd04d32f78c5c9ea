-- Ends one step: writes the job's next state if the job is still at that step, and folds the
-- attempt into its provider's shared state. One request, atomic.
-- The new record drops the step's lease (header.lua), and the job's due-index entry moves to when its
-- next step is due (or leaves the index when nothing is left to do). A job that just finished leaves
-- its owner's jobs in flight and is counted among today's finished jobs, in the BITFIELD that also
-- adds this step's spending, its claim's included, to the budget (budget.lua).
-- KEYS[1] job record, KEYS[2] provider states (st:pv: one JSON object, provider name → state), KEYS[3] the due-index, KEYS[4] the alert book
-- (st:alerts), KEYS[5] the owner's dead-lettered jobs (st:x:<owner>: member job id, score the record's expiry)
-- ARGV[1] next record, ARGV[2] expected gen, ARGV[3] expected seq, ARGV[4] next expiry (epoch ms),
-- ARGV[5] provider event (JSON) or '', ARGV[6] job id, ARGV[7] next due score (epoch ms) or '',
-- ARGV[8] '1' when the next record has a dead-lettered delivery, ARGV[9] today (UTC day number)
-- Returns 1 when written, 0 when the job moved on (nothing changed) or is gone, and when written and
-- the provider event caused incidents, their JSON list instead of 1 (store/incidents.rs: this script's
-- caller is the one instance that alerts them).

check_expiry(ARGV[4], 'job', 0)
-- Swap first (one command on the common path), check the fencing token on what was there.
local old = C('SET', KEYS[1], ARGV[1], 'XX', 'GET', 'PXAT', ARGV[4])
if not old then
  return 0
end
local was, gen, seq, expires = header(old)
if gen ~= ARGV[2] or seq ~= ARGV[3] then
  -- A stale step: put back what was there, with its own expiry.
  C('SET', KEYS[1], old, 'PXAT', expires)
  return 0
end
local becomes = header(ARGV[1])
if finished(becomes) then
  if ARGV[8] == '1' then
    C('ZADD', KEYS[5], ARGV[4], ARGV[6])
    -- The list lives as long as its longest-lived member (a new one has no expiry: GT cannot set it).
    if C('PEXPIREAT', KEYS[5], ARGV[4], 'GT') == 0 and C('PTTL', KEYS[5]) < 0 then
      C('PEXPIREAT', KEYS[5], ARGV[4])
    end
  elseif finished(was) then
    -- Only a job that had finished before can be listed as dead-lettered.
    C('ZREM', KEYS[5], ARGV[6])
  end
end
if ARGV[7] == '' then
  -- Every unfinished job stays in the index (the owner's jobs in flight are recounted from it: create.lua).
  if finished(becomes) then
    C('ZREM', KEYS[3], KEYS[1])
  end
else
  C('ZADD', KEYS[3], ARGV[7], KEYS[1])
end
-- The owner's counters and the budget: one command. After it: the provider states' GET and SET.
local after = 0
if ARGV[5] ~= '' then
  after = 2
end
if finished(becomes) and not finished(was) then
  local done = SLOT_COMPLETED
  if becomes == 'f' then
    done = SLOT_FAILED
  end
  local got = owner_bitfield({{'INCRBY', SLOT_FLIGHT, -1}, {'GET', SLOT_DAY}, {'INCRBY', done, 1}}, after)
  if got[SLOT_DAY] ~= tonumber(ARGV[9]) then
    -- Today's first finished job: the day's counts start afresh.
    local completed, failed = 0, 0
    if becomes == 'f' then failed = 1 else completed = 1 end
    C('BITFIELD', BUDGET_MONTH, 'SET', 'i64', '#' .. SLOT_DAY, ARGV[9], 'SET', 'i64', '#' .. SLOT_COMPLETED, completed,
      'SET', 'i64', '#' .. SLOT_FAILED, failed)
  end
else
  owner_bitfield({}, after)
end
if ARGV[5] == '' then
  return 1
end

-- The same rules as ProviderState::apply in quota.rs.
local e = cjson.decode(ARGV[5])
-- Every provider's state and the deployment's "every provider unusable" flag (~all), in one string.
local raw = C('GET', KEYS[2])
local all = {}
if raw then
  all = cjson.decode(raw)
end
local function n(x)
  return tonumber(x) or 0
end
-- Successes whose finish wrote no state (the adapter's quiet successes: they changed nothing another
-- step acts on), folded in as each would have been: today's successes, the latency average, the last
-- attempt. e.quiet: provider → {{latency ms, instant ms}, ...}.
if type(e.quiet) == 'table' then
  for name, calls in pairs(e.quiet) do
    local q = all[name]
    if type(q) == 'table' then
      for _, call in ipairs(calls) do
        local lat = n(call[1])
        if n(q.lat) == 0 then q.lat = lat else q.lat = math.floor((3 * n(q.lat) + lat) / 4) end
        if q.lat == 0 then q.lat = nil end
        if n(q.ud) ~= tonumber(ARGV[9]) or type(q.ua) ~= 'table' then
          q.ud = tonumber(ARGV[9])
          q.ua = {}
        end
        q.ua.ok = n(q.ua.ok) + 1
        q.la = math.max(n(q.la), n(call[2]))
      end
    end
  end
end
local s = all[e.provider] or {}
local before_dis = s.dis
local before_co = n(s.co)
local before_cu = n(s.cu)
-- A request its claim reserved is counted already (claim.lua); a count from a window older than the
-- one held is dropped, so a late finish never wipes the newer window.
if not e.reserved then
  if e.minute > n(s.mw) then s.mw = e.minute; s.mc = 1 elseif e.minute == n(s.mw) then s.mc = n(s.mc) + 1 end
  if e.day > n(s.dw) then s.dw = e.day; s.dc = 1 elseif e.day == n(s.dw) then s.dc = n(s.dc) + 1 end
end
if n(s.tw) == e.minute then s.tc = n(s.tc) + e.tokens elseif e.minute > n(s.tw) then s.tw = e.minute; s.tc = e.tokens end
s.cu = math.max(n(s.cu), e.cooldown_until_ms)
s.cf = n(s.cf)
s.co = n(s.co)
local class = e.class
if class == cjson.null or class == nil then
  s.cf = 0
  s.co = 0
  -- The latency average (ETA): a quarter of the way to this call's duration.
  local lat = n(e.latency_ms)
  if n(s.lat) == 0 then s.lat = lat else s.lat = math.floor((3 * n(s.lat) + lat) / 4) end
  if s.lat == 0 then s.lat = nil end
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
-- Today's attempts by outcome (the overview's), kept in the state itself: ud the UTC day, ua the counts.
if n(s.ud) ~= tonumber(ARGV[9]) or type(s.ua) ~= 'table' then
  s.ud = tonumber(ARGV[9])
  s.ua = {}
end
s.ua[class] = n(s.ua[class]) + 1
all[e.provider] = s
-- Written back (below, once the flag is decided) with its expiry: it goes if every instance goes quiet.

-- Incidents: the same rules as store::incidents::provider_incidents, system_incident and gate (store/incidents.rs).
local now = e.now_ms
local p = e.provider
local rules = e.alerts or {}
local window = n(rules.window_ms)
local found = {}
if before_dis == nil and s.dis ~= nil then
  table.insert(found, {kind = 'provider_disabled', provider = p, reason = s.dis})
end
if before_co <= now and s.co > now then
  table.insert(found, {kind = 'circuit_opened', provider = p, until_ms = s.co, failures = s.cf})
end
if before_co > 0 and s.co == 0 then
  table.insert(found, {kind = 'circuit_closed', provider = p})
end
if class == 'quota_exhausted' and before_cu <= now and s.cu > now then
  table.insert(found, {kind = 'quota_exhausted', provider = p, until_ms = s.cu})
end
local out = {}
local touched = false
for _, incident in ipairs(found) do
  local scoped = incident.kind ~= 'provider_disabled'
  local send = true
  if incident.kind == 'circuit_closed' then
    -- Told exactly when its opening was.
    send = C('HDEL', KEYS[4], 'o:' .. p) == 1
    scoped = false
    touched = true
  end
  if scoped then
    local last = C('HGET', KEYS[4], 'w:' .. p)
    if last and now < tonumber(last) + window then
      C('HINCRBY', KEYS[4], 'n:' .. p, 1)
      send = false
    else
      C('HSET', KEYS[4], 'w:' .. p, now)
      incident.suppressed = n(C('HGET', KEYS[4], 'n:' .. p))
      C('HDEL', KEYS[4], 'n:' .. p)
      if incident.kind == 'circuit_opened' then
        C('HSET', KEYS[4], 'o:' .. p, '1')
      end
    end
    touched = true
  end
  if send then
    incident.suppressed = incident.suppressed or 0
    incident.at_ms = now
    table.insert(out, incident)
  end
end
local peers = rules.providers or {}
if #peers > 0 then
  local down = all['~all']
  if class == 'ok' then
    if down then
      all['~all'] = nil
      table.insert(out, {kind = 'providers_recovered', provider = p, suppressed = 0, at_ms = now})
    end
  elseif not down then
    local eta = nil
    local usable = false
    for i = 1, #peers do
      local st = all[peers[i]] or {}
      local lc = st.lc
      if st.dis == nil and lc ~= 'auth_invalid' and lc ~= 'gone' then
        local at = math.max(n(st.cu), n(st.co))
        if at <= now then
          usable = true
          break
        end
        if eta == nil or at < eta then eta = at end
      end
    end
    if not usable then
      all['~all'] = 1
      table.insert(out, {kind = 'all_providers_unusable', eta_ms = eta or cjson.null, suppressed = 0, at_ms = now})
    end
  end
end
C('SET', KEYS[2], cjson.encode(all), 'PX', 8 * 86400000)
if touched then
  C('PEXPIRE', KEYS[4], 8 * 86400000)
end
if #out > 0 then
  return cjson.encode(out)
end
return 1
