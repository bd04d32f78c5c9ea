-- Reads a batch and every item's job record for its poller, once the request is counted in its owner's
-- rate window: a constant number of commands however many items (one GET, one MGET). Never shortens a
-- job's life (the items' own polls do that).
-- KEYS[1] the batch record (st:B:<owner>:<id>)
-- ARGV[1] rate limit ('0': none), ARGV[2] the rate window's id (its end, epoch ms), ARGV[3] the owner's
-- job key prefix ('st:j:<owner>:')
-- Returns {count} when over the limit (nothing read) or when there is no such batch, else
-- {count, batch record, then the record of each item that has a job, in item order (false: expired or purged)}.
-- count is 0 when not rate-limited.
local count = owner_request(ARGV[1], ARGV[2], {}, 2)
if ARGV[1] ~= '0' and count > tonumber(ARGV[1]) then
  return {count}
end
local b = C('GET', KEYS[1])
if not b then
  return {count}
end
local header = string.match(b, '^B1 ([^\n]*)\n') or ''
local keys = {}
for id in string.gmatch(header, '%S+') do
  if id ~= '-' then
    -- A job id is its record id (32 characters) and its gen: the record's key takes the first.
    keys[#keys + 1] = ARGV[3] .. string.sub(id, 1, 32)
  end
end
local out = {count, b}
if #keys > 0 then
  local records = C('MGET', unpack(keys))
  for i = 1, #records do
    out[#out + 1] = records[i]
  end
end
return out
