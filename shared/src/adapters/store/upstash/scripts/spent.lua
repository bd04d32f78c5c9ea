-- GET /v1/budget: the budget's buckets in one command (budget.rs), counted like every other call
-- (budget.lua, prepended, so the read includes itself).
-- KEYS[1..24] the last 24 hour buckets, oldest first (KEYS[24] is this hour's), KEYS[25] this month's
-- ARGV[1] the owner whose fields to read, or '' for every field (the operator's view); then budget.lua's
-- Returns 25 flat lists of field, count pairs (as HGETALL answers them).
local out = {}
local owner = ARGV[1]
for i = 1, 25 do
  if owner == '' then
    out[i] = C('HGETALL', KEYS[i])
  else
    local fields = {'j:' .. owner, 's:' .. owner, 'l:' .. owner, 'q:' .. owner}
    local values = C('HMGET', KEYS[i], unpack(fields))
    local found = {}
    for k = 1, 4 do
      if values[k] then
        found[#found + 1] = fields[k]
        found[#found + 1] = values[k]
      end
    end
    out[i] = found
  end
end
return out
