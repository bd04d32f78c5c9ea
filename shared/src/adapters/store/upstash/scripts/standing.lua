-- What an unfinished job's ETA needs (engine/eta.rs), read by the script the route runs anyway
-- (create, read, overview; prepended to each like clock.lua):
-- {jobs ahead of it, every provider's state (st:pv, one JSON object), the millisecond it is due at, and for each
-- horizon h in ARGV[first + 1 .. first + ARGV[first]] the jobs due after that millisecond and at most h past it}; a job not in
-- the index has nobody ahead and no horizons.
-- The horizons cost one command, not one each: the scores of the first STANDING_SCAN jobs due after it
-- are read at once and counted here; only when there are more than that are the horizons past the last
-- score read counted by ZCOUNT, so the answer is exact either way.
local STANDING_SCAN = 1000
-- 1: the standing reads the provider states (one GET); 0: the caller holds them (create.lua's ARGV[11]),
-- the answer's states are false.
local STANDING_STATES = 1
local function states_of(states_key)
  if STANDING_STATES == 0 then
    return false
  end
  return C('GET', states_key) or false
end
-- For each horizon, the jobs due after ms and at most the horizon past it: counted in scores (the
-- scores after ms, ascending, as read), and by ZCOUNT past the last one when the read was cut (full).
local function horizons(due_key, ms, scores, full, first)
  local seen = #scores
  local last = scores[seen]
  local later = {}
  local j = 1
  local counted = 0
  for i = first + 1, first + tonumber(ARGV[first]) do
    local upto = ms + tonumber(ARGV[i]) + 1
    if full and (last == nil or upto > last) then
      -- Past what was read: counted by the index itself.
      later[#later + 1] = C('ZCOUNT', due_key, string.format('%.0f', ms + 1), string.format('(%.0f', upto))
    else
      while j <= seen and scores[j] < upto do
        counted = counted + 1
        j = j + 1
      end
      later[#later + 1] = counted
    end
  end
  return later
end
local function standing(due_key, states_key, ahead, ms, first)
  local states = states_of(states_key)
  if not ms then
    return {0, states, 0, {}}
  end
  local read = C('ZRANGEBYSCORE', due_key, string.format('%.0f', ms + 1), '+inf', 'WITHSCORES', 'LIMIT', 0, STANDING_SCAN)
  local scores = {}
  for i = 2, #read, 2 do
    scores[#scores + 1] = tonumber(read[i])
  end
  return {ahead, states, ms, horizons(due_key, ms, scores, #scores == STANDING_SCAN, first)}
end
-- The same answer for a job in the index, found by its member: while the index's head (its first
-- STANDING_SCAN entries, one ZRANGE) holds the job, its rank, its millisecond and the scores after it
-- all come from that one read; a job further back is placed by ZRANK and ZSCORE, then as above. The
-- index's member ~s (first: sweep.lua) is no job ahead.
local function standing_of(due_key, states_key, member, first)
  local head = C('ZRANGE', due_key, 0, STANDING_SCAN - 1, 'WITHSCORES')
  local at = nil
  for i = 1, #head, 2 do
    if head[i] == member then
      at = i
      break
    end
  end
  local skip = 0
  if head[1] == '~s' then
    skip = 1
  end
  if not at then
    local score = C('ZSCORE', due_key, member)
    local rank = C('ZRANK', due_key, member)
    if not rank then
      return standing(due_key, states_key, 0, nil, first)
    end
    return standing(due_key, states_key, math.max(rank - skip, 0), math.floor(tonumber(score)), first)
  end
  local ms = math.floor(tonumber(head[at + 1]))
  local states = states_of(states_key)
  -- The jobs due after its millisecond among those read, in order.
  local scores = {}
  for i = at + 2, #head, 2 do
    local score = tonumber(head[i + 1])
    if score >= ms + 1 then
      scores[#scores + 1] = score
    end
  end
  local later = horizons(due_key, ms, scores, #head / 2 == STANDING_SCAN, first)
  return {math.max((at - 1) / 2 - skip, 0), states, ms, later}
end
