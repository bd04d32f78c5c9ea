-- GET /v1/budget: the budget (budget.rs, scripts/budget.lua) in one request: the last 24 hours, oldest
-- first, then the month. Each hour is read from the month bucket it falls in: this month's or, for the
-- hours of a day window that began last month, the previous one's.
-- An owner's read: KEYS[1] the owner's bucket this month, KEYS[2] the previous month's
-- (st:b:m:<yyyymm>:<owner>); ARGV[1] the owner.
-- The deployment's read (ARGV[1] ''): KEYS[1], KEYS[2] the same bucket names without an owner
-- (st:b:m:<yyyymm>:), KEYS[3], KEYS[4] those months' owners (st:b:o:<yyyymm>): every owner's buckets are
-- read by a name built here (the owners are only known from those sets), and the deployment's totals
-- are their sums (the owner '' is the deployment's own calls: in the totals only).
-- ARGV[2..25]: each hour as '<1 or 2: which month>:<hour of that month>'. Then budget.lua's.
-- Returns 25 flat lists of field, count pairs: 'j:<owner>', 's:<owner>', 'l:<owner>', 'q:<owner>' and,
-- for the deployment's read, the bare totals 'j', 's', 'l', 'q'.
local LETTERS = {'j', 's', 'l', 'q'}
-- The four counters of every hour asked and of the month (#0..#3) from one bucket, in one command.
local function counters(key, which)
  local args = {'BITFIELD', key}
  for i = 2, 25 do
    local m, h = string.match(ARGV[i], '^(%d):(%d+)$')
    local base = 0
    if m == which then
      base = 4 + 4 * tonumber(h)
    else
      base = -1
    end
    for k = 0, 3 do
      -- Another month's hour: read a month counter in its place and drop it below.
      args[#args + 1] = 'GET'
      args[#args + 1] = 'i64'
      args[#args + 1] = '#' .. math.max(base, 0) + k
    end
  end
  for k = 0, 3 do
    args[#args + 1] = 'GET'
    args[#args + 1] = 'i64'
    args[#args + 1] = '#' .. k
  end
  return C(unpack(args))
end
-- Adds one owner's two buckets to out (25 lists) and to totals (25 arrays of four).
local function add(out, totals, who, this_key, last_key, owned)
  local now = counters(this_key, '1')
  local before = nil
  if last_key ~= this_key then
    before = counters(last_key, '2')
  end
  for i = 1, 25 do
    local got = now
    if i <= 24 and string.sub(ARGV[i + 1], 1, 1) == '2' then
      got = before
    end
    for k = 1, 4 do
      local n = 0
      if got then
        n = got[4 * (i - 1) + k]
      end
      totals[i][k] = totals[i][k] + n
      if owned and n ~= 0 then
        out[i][#out[i] + 1] = LETTERS[k] .. ':' .. who
        out[i][#out[i] + 1] = tostring(n)
      end
    end
  end
end
local out, totals = {}, {}
for i = 1, 25 do
  out[i] = {}
  totals[i] = {0, 0, 0, 0}
end
local owner = ARGV[1]
if owner ~= '' then
  add(out, totals, owner, KEYS[1], KEYS[2], true)
  return out
end
for _, who in ipairs(C('SUNION', KEYS[3], KEYS[4])) do
  add(out, totals, who, KEYS[1] .. who, KEYS[2] .. who, who ~= '')
end
for i = 1, 25 do
  for k = 1, 4 do
    if totals[i][k] ~= 0 then
      out[i][#out[i] + 1] = LETTERS[k]
      out[i][#out[i] + 1] = tostring(totals[i][k])
    end
  end
end
return out
