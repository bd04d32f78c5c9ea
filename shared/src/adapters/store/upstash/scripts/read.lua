-- Reads a job for its poller, once the request is counted in its owner's rate window. The first
-- read of a finished job shortens its life to the grace period (PEXPIRE ... LT never lengthens it,
-- so later reads keep the first deadline), unless the job still owes deliveries (header flag ' d').
-- KEYS[1] job record, KEYS[2] the owner's rate counter (st:r:<owner>:<window id>),
-- KEYS[3] the due-index (st:due), KEYS[4] the provider states (st:providers), KEYS[5] the job's lease
-- (st:l:<owner>:<id>, value "<gen>:<seq>")
-- ARGV[1] grace (ms), ARGV[2] rate limit ('0': none), ARGV[3] rate window end (epoch ms),
-- ARGV[4] the number of the ETA's horizons, then each (ms), then the incarnation (gen) the polled id
-- names ('': whichever; another one reads as no job, and its life is not touched)
-- Returns {count} when over the limit (nothing read) or when there is no such job, else
-- {count, record, 1 if a step holds the lease else 0} for a finished job, and for an unfinished one
-- {count, record, running, standing}: what its ETA needs (scripts/standing.lua; ahead is its rank in the due-index).
-- count is 0 when not rate-limited.
local count = 0
if ARGV[2] ~= '0' then
  count = count_request(KEYS[2], ARGV[3])
  if count > tonumber(ARGV[2]) then
    return {count}
  end
end
local v = C('GET', KEYS[1])
if not v then
  return {count}
end
local state, gen, seq, flag = string.match(v, '^J1 (%a) (%x+) (%d+) %d+ ?(%a*)\n')
local want = ARGV[5 + tonumber(ARGV[4])]
if want ~= '' and want ~= gen then
  return {count}
end
if state == 's' or state == 'f' then
  if flag ~= 'd' then
    C('PEXPIRE', KEYS[1], ARGV[1], 'LT')
  end
  return {count, v, 0}
end
local running = 0
if C('GET', KEYS[5]) == gen .. ':' .. seq then
  running = 1
end
local score = C('ZSCORE', KEYS[3], KEYS[1])
return {count, v, running, standing(KEYS[3], KEYS[4], C('ZRANK', KEYS[3], KEYS[1]) or 0,
  score and math.floor(tonumber(score)), 4)}
