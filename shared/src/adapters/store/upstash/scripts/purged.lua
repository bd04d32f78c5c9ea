-- After a purge deleted a job's record (GETDEL, or purge.lua), what the job's state says it still held:
-- an unfinished job its due-index entry and its place among the owner's jobs in flight; a finished one
-- its due-index entry while it owed deliveries (header flag ' d'), and a place among the dead-lettered
-- when a delivery was (' x'; ' d': one may have been while others were still owed). The adapter runs it
-- only then: a finished job that owes nothing (the common purge) holds nothing else.
-- KEYS[1] the due-index, KEYS[2] the owner's dead-lettered jobs (st:x:<owner>)
-- ARGV[1] the record's key, ARGV[2] job id (its record id), ARGV[3] the record's state letter, ARGV[4]
-- its header flag ('d', 'x' or '')
if not finished(ARGV[3]) then
  C('ZREM', KEYS[1], ARGV[1])
  owner_bitfield({{'INCRBY', SLOT_FLIGHT, -1}}, 0)
  return 1
end
if ARGV[4] == 'd' then
  C('ZREM', KEYS[1], ARGV[1])
end
if ARGV[4] == 'd' or ARGV[4] == 'x' then
  C('ZREM', KEYS[2], ARGV[2])
end
return 1
