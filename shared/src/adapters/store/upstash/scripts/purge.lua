-- Deletes an owner's job at once, once the request is counted in its owner's rate window; an
-- unfinished job leaves its owner's jobs in flight and the due-index.
-- KEYS[1] job record, KEYS[2] the due-index (the entry goes too: a purged job leaves no key behind),
-- KEYS[3] the owner's dead-lettered jobs (st:x:<owner>)
-- ARGV[1] job id (its record id), ARGV[2] rate limit ('0': none), ARGV[3] the rate window's id (its
-- end, epoch ms), ARGV[4] the incarnation (gen) the purged id names ('': whichever, as a purge by
-- commit; another incarnation is left alone, at the cost of a GET before the DEL)
-- Returns {count, 1 if the job existed else 0}; over the limit nothing is deleted.
-- After the count: GETDEL, or GET and DEL.
local after = 1
if ARGV[4] ~= '' then
  after = 2
end
local count = owner_request(ARGV[2], ARGV[3], {}, after)
if ARGV[2] ~= '0' and count > tonumber(ARGV[2]) then
  return {count, 0}
end
local v
if ARGV[4] == '' then
  v = C('GETDEL', KEYS[1])
else
  v = C('GET', KEYS[1])
  if v and select(2, header(v)) ~= ARGV[4] then
    return {count, 0}
  end
  if v then
    C('DEL', KEYS[1])
  end
end
if not v then
  return {count, 0}
end
-- What the job's state says it still holds: an unfinished job its due-index entry and its place among
-- the owner's jobs in flight; a finished one its due-index entry while it owes deliveries (header flag
-- ' d'), and a place among the dead-lettered when a delivery was (' x').
local state, _, _, _, flag = header(v)
if not finished(state) then
  C('ZREM', KEYS[2], KEYS[1])
  owner_bitfield({{'INCRBY', SLOT_FLIGHT, -1}}, 0)
else
  if flag == 'd' then
    C('ZREM', KEYS[2], KEYS[1])
  end
  -- Header flag ' x': a delivery was dead-lettered; ' d': one may have been while others are still owed.
  if flag == 'd' or flag == 'x' then
    C('ZREM', KEYS[3], ARGV[1])
  end
end
return {count, 1}
