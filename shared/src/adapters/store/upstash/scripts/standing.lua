-- What an unfinished job's ETA needs (engine/eta.rs), read by the script the route runs anyway
-- (create, read, overview; prepended to each like clock.lua):
-- {jobs ahead of it, every provider's state (HGETALL, flat), the millisecond it is due at, and for each
-- horizon h in ARGV[first + 1 .. first + ARGV[first]] the jobs due after that millisecond and at most h past it}; a job not in
-- the index has nobody ahead and no horizons.
local function standing(due_key, states_key, ahead, ms, first)
  local states = C('HGETALL', states_key)
  if not ms then
    return {0, states, 0, {}}
  end
  local later = {}
  for i = first + 1, first + tonumber(ARGV[first]) do
    later[#later + 1] = C('ZCOUNT', due_key, string.format('%.0f', ms + 1),
      string.format('(%.0f', ms + tonumber(ARGV[i]) + 1))
  end
  return {ahead, states, ms, later}
end
