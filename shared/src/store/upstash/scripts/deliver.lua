-- Reads a job for its poller. The first read of a finished job shortens its life to the grace
-- period (PEXPIRE ... LT never lengthens it, so later reads keep the first deadline).
-- KEYS[1] job record; ARGV[1] grace (ms); ARGV[2] the job's lease key prefix ("st:l:<owner>:<id>:")
-- Returns nil, or {record, 1 if a step holds the lease else 0}.
local v = redis.call('GET', KEYS[1])
if not v then
  return nil
end
local state, gen, seq = string.match(v, '^J1 (%a) (%x+) (%d+) ')
if state == 's' or state == 'f' then
  redis.call('PEXPIRE', KEYS[1], ARGV[1], 'LT')
  return {v, 0}
end
return {v, redis.call('EXISTS', ARGV[2] .. gen .. ':' .. seq)}
