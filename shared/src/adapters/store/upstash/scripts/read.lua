-- Reads a job for its poller, once the request is counted in its owner's rate window. The first
-- read of a finished job shortens its life to the grace period (PEXPIRE ... LT never lengthens it,
-- so later reads keep the first deadline), unless the job still owes deliveries (header flag ' d').
-- What an unfinished job's ETA needs is read in the same request, and only what is cheap whatever
-- the backlog: its rank in the due-index and the provider states (no horizons: the jobs due after
-- it are counted when it is submitted, not on every poll).
-- KEYS[1] job record, KEYS[2] the due-index (st:due), KEYS[3] the provider states (st:pv)
-- ARGV[1] grace (ms), ARGV[2] rate limit ('0': none), ARGV[3] the rate window's id (its end, epoch ms),
-- ARGV[4] the incarnation (gen) the polled id names ('': whichever; another one reads as no job, and
-- its life is not touched), ARGV[5] now (epoch ms, the engine's clock: is a lease live)
-- Returns {count} when over the limit (nothing read) or when there is no such job, else
-- {count, record, 1 if a step holds the lease else 0} for a finished job, and for an unfinished one
-- {count, record, running, {ahead, provider states}}.
-- count is 0 when not rate-limited.
-- The record and the provider states in one command (the states are only answered for an unfinished job).
local got = C('MGET', KEYS[1], KEYS[3])
local v, states = got[1], got[2]
local state, gen, _, _, flag, lease = header(v)
if v and ARGV[4] ~= '' and ARGV[4] ~= gen then
  v = nil
end
-- After the count: PEXPIRE for a finished job, ZRANK for an unfinished one.
local after = 0
if v then
  if not finished(state) then
    after = 1
  elseif flag ~= 'd' then
    after = 1
  end
end
local count = owner_request(ARGV[2], ARGV[3], {}, after)
if ARGV[2] ~= '0' and count > tonumber(ARGV[2]) then
  return {count}
end
if not v then
  return {count}
end
local running = 0
if lease > tonumber(ARGV[5]) then
  running = 1
end
if finished(state) then
  if flag ~= 'd' then
    C('PEXPIRE', KEYS[1], ARGV[1], 'LT')
  end
  return {count, v, running}
end
return {count, v, running, {place(KEYS[2], KEYS[1]), states or false}}
