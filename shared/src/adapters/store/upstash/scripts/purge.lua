-- Deletes an owner's job at once, once the request is counted in its owner's rate window; an
-- unfinished job leaves its owner's jobs in flight.
-- KEYS[1] job record, KEYS[2] the owner's rate counter (st:r:<owner>:<window id>),
-- KEYS[3] the owner's jobs in flight (st:f:<owner>), KEYS[4] the job's lease, KEYS[5] the due-index
-- (the lease and the index entry go too: a purged job leaves no key behind), KEYS[6] the owner's
-- unfinished jobs (st:u:<owner>), KEYS[7] the owner's dead-lettered jobs (st:x:<owner>)
-- ARGV[1] job id (its record id), ARGV[2] rate limit ('0': none), ARGV[3] rate window end (epoch ms),
-- ARGV[4] the incarnation (gen) the purged id names ('': whichever, as a purge by commit; another
-- incarnation is left alone, at the cost of a GET before the DEL)
-- Returns {count, 1 if the job existed else 0}; over the limit nothing is deleted.
local count = 0
if ARGV[2] ~= '0' then
  count = count_request(KEYS[2], ARGV[3])
  if count > tonumber(ARGV[2]) then
    return {count, 0}
  end
end
local v
if ARGV[4] == '' then
  v = C('GETDEL', KEYS[1])
else
  v = C('GET', KEYS[1])
  if v and string.match(v, '^J1 %a (%x+) ') ~= ARGV[4] then
    return {count, 0}
  end
  if v then
    C('DEL', KEYS[1])
  end
end
if not v then
  return {count, 0}
end
-- What the job's state says it still holds: an unfinished job its lease, its due-index entry, its place
-- among the owner's unfinished jobs and jobs in flight; a finished one its due-index entry while it owes
-- deliveries (header flag ' d'), and a place among the dead-lettered when a delivery was (' x').
local state, flag = string.match(v, '^J1 (%a) %x+ %d+ %d+ ?(%a*)\n')
if state ~= 's' and state ~= 'f' then
  C('DEL', KEYS[4])
  C('ZREM', KEYS[5], KEYS[1])
  C('ZREM', KEYS[6], ARGV[1])
  C('ZREM', KEYS[3], ARGV[1])
else
  if flag == 'd' then
    C('DEL', KEYS[4])
    C('ZREM', KEYS[5], KEYS[1])
  end
  -- Header flag ' x': a delivery was dead-lettered; ' d': one may have been while others are still owed.
  if flag == 'd' or flag == 'x' then
    C('ZREM', KEYS[7], ARGV[1])
  end
end
return {count, 1}
