-- What an unfinished job's ETA needs (engine/eta.rs), read by the script the route runs anyway
-- (create, read, overview; prepended to each like clock.lua):
-- {jobs ahead of it, every provider's state (st:pv, one JSON object), the millisecond it is due at, and for each
-- horizon h in ARGV[first + 1 .. first + ARGV[first]] the jobs due after that millisecond and at most h past it}; a job not in
-- the index has nobody ahead and no horizons.
-- The horizons cost one command, not one each: the scores of the first STANDING_SCAN jobs due after it
-- are read at once and counted here; only when there are more than that are the horizons past the last
-- score read counted by ZCOUNT, so the answer is exact either way.
local STANDING_SCAN = 1000
local function standing(due_key, states_key, ahead, ms, first)
  local states = C('GET', states_key) or false
  if not ms then
    return {0, states, 0, {}}
  end
  local scores = C('ZRANGEBYSCORE', due_key, string.format('%.0f', ms + 1), '+inf', 'WITHSCORES', 'LIMIT', 0, STANDING_SCAN)
  local seen = #scores / 2
  local last = nil
  if seen > 0 then
    last = tonumber(scores[#scores])
  end
  local later = {}
  local j = 1
  local counted = 0
  for i = first + 1, first + tonumber(ARGV[first]) do
    local upto = ms + tonumber(ARGV[i]) + 1
    if seen == STANDING_SCAN and upto > last then
      -- Past what was read: counted by the index itself.
      later[#later + 1] = C('ZCOUNT', due_key, string.format('%.0f', ms + 1), string.format('(%.0f', upto))
    else
      while j <= seen and tonumber(scores[2 * j]) < upto do
        counted = counted + 1
        j = j + 1
      end
      later[#later + 1] = counted
    end
  end
  return {ahead, states, ms, later}
end
