-- Submit met a finally failed job with the same identity: replace it with the new one, unless
-- someone else already did. KEYS[1] job record; ARGV[1] new record, ARGV[2] failed job's gen,
-- ARGV[3] new expiry (epoch ms). Returns nil when written, else the record that is there now.
local v = redis.call('GET', KEYS[1])
if v then
  local state, gen = string.match(v, '^J1 (%a) (%x+) ')
  if state ~= 'f' or gen ~= ARGV[2] then
    return v
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[3])
return nil
