-- GET /v1/budget: the budget's buckets (budget.rs, scripts/budget.lua) in one request.
-- An owner's read: KEYS[1..24] the owner's last 24 hour buckets, oldest first (KEYS[24] is this hour's),
-- KEYS[25] its month's; ARGV[1] the owner.
-- The deployment's read (ARGV[1] ''): KEYS[1..24] the hour buckets' names and KEYS[25] the month's without
-- an owner (st:b:h:<yyyymmddhh>:), KEYS[26] and KEYS[27] the owners of this month and of the one 24 hours
-- ago (st:b:o:<yyyymm>; the day window may begin last month): every owner's buckets
-- are read by name built here (the owners are only known from that set), and the deployment's totals
-- are their sums (the owner '' is the deployment's own calls: in the totals only).
-- Then budget.lua's. Returns 25 flat lists of field, count pairs: 'j:<owner>', 's:<owner>', 'l:<owner>',
-- 'q:<owner>' and, for the deployment's read, the bare totals 'j', 's', 'l', 'q'.
local LETTERS = {'j', 's', 'l', 'q'}
local function counters(key)
  return C('BITFIELD', key, 'GET', 'i64', '#0', 'GET', 'i64', '#1', 'GET', 'i64', '#2', 'GET', 'i64', '#3')
end
local out = {}
local owner = ARGV[1]
if owner ~= '' then
  for i = 1, 25 do
    local found = {}
    local got = counters(KEYS[i])
    for k = 1, 4 do
      if got[k] ~= 0 then
        found[#found + 1] = LETTERS[k] .. ':' .. owner
        found[#found + 1] = tostring(got[k])
      end
    end
    out[i] = found
  end
  return out
end
local owners = C('SUNION', KEYS[26], KEYS[27])
for i = 1, 25 do
  local found = {}
  local total = {0, 0, 0, 0}
  for _, who in ipairs(owners) do
    local got = counters(KEYS[i] .. who)
    for k = 1, 4 do
      total[k] = total[k] + got[k]
      if who ~= '' and got[k] ~= 0 then
        found[#found + 1] = LETTERS[k] .. ':' .. who
        found[#found + 1] = tostring(got[k])
      end
    end
  end
  for k = 1, 4 do
    if total[k] ~= 0 then
      found[#found + 1] = LETTERS[k]
      found[#found + 1] = tostring(total[k])
    end
  end
  out[i] = found
end
return out
