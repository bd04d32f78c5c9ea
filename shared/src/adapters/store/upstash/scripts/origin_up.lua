-- The receiver-recovery fast path, on a delivery to a down origin that succeeded: the origin is seen up
-- (its probe gone), and every job waiting on it that still owes deliveries is due at once: moved in the
-- due-index (only earlier) and answered with its current step, which the caller sends. The same rule as
-- origins::mark_up. Nothing (one GET) when the origin is not down: another success woke them already.
-- KEYS[1] provider states (st:pv, the origin's field ~o:<origin>), KEYS[2] the origin's waiting jobs
-- (st:o:<origin>), KEYS[3] the due-index
-- ARGV[1] the origin's field, ARGV[2] now (epoch ms), ARGV[3] the woken jobs' due score
-- Returns {key, gen, seq, ...} of the woken jobs.
local raw = C('GET', KEYS[1])
if not raw then
  return {}
end
local all = cjson.decode(raw)
local o = all[ARGV[1]]
if type(o) ~= 'table' or (tonumber(o.d) or 0) == 0 then
  return {}
end
all[ARGV[1]] = {d = 0, u = tonumber(ARGV[2]), n = 0, pa = 0, pu = 0}
C('SET', KEYS[1], cjson.encode(all), 'KEEPTTL')
local out = {}
-- In chunks, so no command takes more arguments than Lua can unpack.
while true do
  local keys = C('ZRANGE', KEYS[2], 0, 499)
  if #keys == 0 then
    break
  end
  local records = C('MGET', unpack(keys))
  local moved = {'ZADD', KEYS[3], 'XX', 'LT'}
  for i, key in ipairs(keys) do
    local _, gen, seq, _, flag = header(records[i])
    if gen and flag == 'd' then
      moved[#moved + 1] = ARGV[3]
      moved[#moved + 1] = key
      out[#out + 1] = key
      out[#out + 1] = gen
      out[#out + 1] = seq
    end
  end
  if #moved > 4 then
    C(unpack(moved))
  end
  if #keys < 500 then
    C('DEL', KEYS[2])
    break
  end
  C('ZREMRANGEBYRANK', KEYS[2], 0, 499)
end
return out
