-- One owner's jobs at a glance (GET /v1/jobs), once the request is counted in its owner's rate window.
-- A dashboard read, not on a job's path: it reads what the job path already keeps, never a SCAN of
-- the keyspace: the owner's entries in the due-index (ZSCAN by the owner's key prefix; the earliest due
-- come first), its dead-lettered jobs by record expiry (st:x:<owner>), today's counts (the owner's
-- finished jobs in its bucket, budget.lua; each provider's attempts in its state, finish.lua).
-- KEYS[1] the due-index (st:due), KEYS[2] st:x:<owner>, KEYS[3] the provider states (st:pv)
-- ARGV[1] rate limit ('0': none), ARGV[2] the rate window's id (its end, epoch ms), ARGV[3] owner,
-- ARGV[4] now (epoch ms), ARGV[5] most unfinished jobs counted by state, ARGV[6] most oldest jobs
-- answered whole, ARGV[7] most dead-lettered jobs answered whole, ARGV[8] today (UTC day number),
-- ARGV[9] the number of the ETA's horizons, then each (ms), then the most tenants answered
-- Returns {count} when over the limit, else {count, unfinished, counted, waiting, active, delayed,
-- {record, running, standing (scripts/standing.lua), ...} of the oldest, dead-lettered, {record, ...}, {field, value, ...} of today's
-- counts: 'p:<outcome>:<provider>' for every provider, 'o:<s|f>:<owner>' for this owner only,
-- {tenant ('' for jobs naming none), unfinished, running, ...} over the counted jobs, the most unfinished first}.
local count, got = owner_request(ARGV[1], ARGV[2], {{'GET', SLOT_DAY}, {'GET', SLOT_COMPLETED}, {'GET', SLOT_FAILED}}, 0)
if ARGV[1] ~= '0' and count > tonumber(ARGV[1]) then
  return {count}
end
local records = 'st:j:' .. ARGV[3] .. ':'
local now = tonumber(ARGV[4])
local entries, cursor = {}, '0'
repeat
  local page = C('ZSCAN', KEYS[1], cursor, 'MATCH', records .. '*', 'COUNT', 1000)
  cursor = page[1]
  for i = 1, #page[2], 2 do
    entries[#entries + 1] = {page[2][i], tonumber(page[2][i + 1])}
  end
until cursor == '0'
table.sort(entries, function(a, b) return a[2] < b[2] end)
-- A counted job's tenant (Job::tenant): its spec's context's `tenantId`, else `userId`, when a non-empty
-- string; '' when it names neither (scripts/json.lua walks the record's JSON, never rewrites it).
local function tenant_of(v)
  local start = json_start(v)
  if not start then return '' end
  return tenant_name(v, member(v, start, 'spec'))
end
local tenants, tenant_names = {}, {}
local waiting, active, delayed, counted = 0, 0, 0, 0
local unfinished = #entries
local oldest = {}
local want = tonumber(ARGV[6])
local scan = math.min(#entries, tonumber(ARGV[5]))
for i = 1, scan, 500 do
  local keys = {}
  for k = i, math.min(i + 499, scan) do
    keys[#keys + 1] = entries[k][1]
  end
  local vs = C('MGET', unpack(keys))
  for k, v in ipairs(vs) do
    local state, _, _, _, _, lease = header(v)
    if state == nil or finished(state) then
      -- Gone, or finished and owing deliveries: not unfinished.
      unfinished = unfinished - 1
    else
      counted = counted + 1
      local running = 0
      if lease > now then
        running = 1
        active = active + 1
      elseif state == 'w' then
        delayed = delayed + 1
      else
        waiting = waiting + 1
      end
      local tenant = tenant_of(v)
      if not tenants[tenant] then
        tenants[tenant] = {0, 0}
        tenant_names[#tenant_names + 1] = tenant
      end
      tenants[tenant][1] = tenants[tenant][1] + 1
      tenants[tenant][2] = tenants[tenant][2] + running
      if #oldest < 3 * want then
        oldest[#oldest + 1] = v
        oldest[#oldest + 1] = running
        oldest[#oldest + 1] = standing(KEYS[1], KEYS[3], place(KEYS[1], keys[k]),
          math.floor(entries[i + k - 1][2]), 9)
      end
    end
  end
end
C('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[4])
local dead = {}
for _, id in ipairs(C('ZRANGE', KEYS[2], 0, tonumber(ARGV[7]) - 1)) do
  local v = C('GET', records .. id)
  local state = header(v)
  if finished(state) then
    dead[#dead + 1] = v
  else
    -- Gone, or replaced by a new submit with the same identity.
    C('ZREM', KEYS[2], id)
  end
end
local dead_total = C('ZCARD', KEYS[2])
local day = {}
if got[SLOT_DAY] == tonumber(ARGV[8]) then
  day = {'o:s:' .. ARGV[3], got[SLOT_COMPLETED], 'o:f:' .. ARGV[3], got[SLOT_FAILED]}
end
local raw = C('GET', KEYS[3])
local states = {}
if raw then
  states = cjson.decode(raw)
end
for name, s in pairs(states) do
  -- Names starting with ~ are the deployment's flags (finish.lua), not providers.
  if type(s) == 'table' and tonumber(s.ud) == tonumber(ARGV[8]) and type(s.ua) == 'table' then
    for outcome, n in pairs(s.ua) do
      day[#day + 1] = 'p:' .. outcome .. ':' .. name
      day[#day + 1] = n
    end
  end
end
table.sort(tenant_names, function(a, b)
  if tenants[a][1] ~= tenants[b][1] then return tenants[a][1] > tenants[b][1] end
  return a < b
end)
local by_tenant = {}
for i = 1, math.min(#tenant_names, tonumber(ARGV[10 + tonumber(ARGV[9])])) do
  local t = tenant_names[i]
  by_tenant[#by_tenant + 1] = t
  by_tenant[#by_tenant + 1] = tenants[t][1]
  by_tenant[#by_tenant + 1] = tenants[t][2]
end
return {count, unfinished, counted, waiting, active, delayed, oldest, dead_total, dead, day, by_tenant}
