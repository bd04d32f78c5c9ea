-- One owner's jobs at a glance (GET /v1/jobs), once the request is counted in its owner's rate window.
-- Bounded work on what the scripts already index, never a SCAN: the owner's unfinished jobs by submit
-- time (st:u:<owner>), its dead-lettered jobs by record expiry (st:x:<owner>), today's counters (st:a:<day>).
-- KEYS[1] the owner's rate counter, KEYS[2] st:u:<owner>, KEYS[3] st:x:<owner>, KEYS[4] st:a:<today>,
-- KEYS[5] the due-index (st:due), KEYS[6] the provider states (st:providers)
-- ARGV[1] rate limit ('0': none), ARGV[2] rate window end (epoch ms), ARGV[3] owner, ARGV[4] now (epoch ms),
-- ARGV[5] most unfinished jobs counted by state, ARGV[6] most oldest jobs answered whole,
-- ARGV[7] most dead-lettered jobs answered whole, ARGV[8] the number of the ETA's horizons, then each (ms)
-- Returns {count} when over the limit, else {count, unfinished, counted, waiting, active, delayed,
-- {record, running, standing (scripts/standing.lua), ...} of the oldest, dead-lettered, {record, ...}, {field, value, ...} of today's
-- counters: 'p:<outcome>:<provider>' for every provider, 'o:<s|f>:<owner>' for this owner only}.
local count = 0
if ARGV[1] ~= '0' then
  count = count_request(KEYS[1], ARGV[2])
  if count > tonumber(ARGV[1]) then
    return {count}
  end
end
local records = 'st:j:' .. ARGV[3] .. ':'
local leases = 'st:l:' .. ARGV[3] .. ':'
local waiting, active, delayed, counted = 0, 0, 0, 0
local oldest = {}
local want = tonumber(ARGV[6])
for _, id in ipairs(C('ZRANGE', KEYS[2], 0, tonumber(ARGV[5]) - 1)) do
  -- The header alone: a record may be tens of KB.
  local head = C('GETRANGE', records .. id, 0, 80)
  local state, gen, seq = string.match(head, '^J1 (%a) (%x+) (%d+) ')
  if state == nil or state == 's' or state == 'f' then
    -- Expired unfinished (or finished by a write this index missed): it leaves the index.
    C('ZREM', KEYS[2], id)
  else
    counted = counted + 1
    local running = 0
    if C('GET', leases .. id) == gen .. ':' .. seq then
      running = 1
      active = active + 1
    elseif state == 'w' then
      delayed = delayed + 1
    else
      waiting = waiting + 1
    end
    if #oldest < 3 * want then
      oldest[#oldest + 1] = C('GET', records .. id)
      oldest[#oldest + 1] = running
      local score = C('ZSCORE', KEYS[5], records .. id)
      oldest[#oldest + 1] = standing(KEYS[5], KEYS[6], C('ZRANK', KEYS[5], records .. id) or 0,
        score and math.floor(tonumber(score)), 8)
    end
  end
end
local unfinished = C('ZCARD', KEYS[2])
C('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[4])
local dead = {}
for _, id in ipairs(C('ZRANGE', KEYS[3], 0, tonumber(ARGV[7]) - 1)) do
  local v = C('GET', records .. id)
  local state = v and string.sub(v, 4, 4)
  if state == 's' or state == 'f' then
    dead[#dead + 1] = v
  else
    -- Gone, or replaced by a new submit with the same identity.
    C('ZREM', KEYS[3], id)
  end
end
local dead_total = C('ZCARD', KEYS[3])
local day = {}
local mine_s, mine_f = 'o:s:' .. ARGV[3], 'o:f:' .. ARGV[3]
local fields = C('HGETALL', KEYS[4])
for i = 1, #fields, 2 do
  local f = fields[i]
  if string.sub(f, 1, 2) == 'p:' or f == mine_s or f == mine_f then
    day[#day + 1] = f
    day[#day + 1] = fields[i + 1]
  end
end
return {count, unfinished, counted, waiting, active, delayed, oldest, dead_total, dead, day}
