-- Deletes an owner's job at once, once the request is counted in its owner's rate window; an
-- unfinished job leaves its owner's jobs in flight.
-- KEYS[1] job record, KEYS[2] the owner's rate counter (st:r:<owner>:<window id>),
-- KEYS[3] the owner's jobs in flight (st:f:<owner>), KEYS[4] the job's lease, KEYS[5] the due-index
-- (the lease and the index entry go too: a purged job leaves no key behind), KEYS[6] the owner's
-- unfinished jobs (st:u:<owner>), KEYS[7] the owner's dead-lettered jobs (st:x:<owner>)
-- ARGV[1] job id, ARGV[2] rate limit ('0': none), ARGV[3] rate window end (epoch ms)
-- Returns {count, 1 if the job existed else 0}; over the limit nothing is deleted.
if ARGV[2] ~= '0' then
  check_expiry(ARGV[3], 'rate window', RATE_WINDOW_SLACK_MS)
end
local count = 0
if ARGV[2] ~= '0' then
  count = C('INCR', KEYS[2])
  if count == 1 then
    C('PEXPIREAT', KEYS[2], ARGV[3])
  end
  if count > tonumber(ARGV[2]) then
    return {count, 0}
  end
end
local v = C('GETDEL', KEYS[1])
if not v then
  return {count, 0}
end
C('DEL', KEYS[4])
C('ZREM', KEYS[5], KEYS[1])
C('ZREM', KEYS[6], ARGV[1])
C('ZREM', KEYS[7], ARGV[1])
local state = string.sub(v, 4, 4)
if state ~= 's' and state ~= 'f' then
  C('ZREM', KEYS[3], ARGV[1])
end
return {count, 1}
