-- One sweep of the due-index (issue 14): the jobs whose next step is due (or overdue: a lost
-- message, a lease that lapsed) come back with their current step so the sweeper can queue it, and
-- move to now + grace so the next sweep only sees them again if they made no progress. Entries whose
-- record is gone (expired, purged) are dropped here, on read. One command whatever the index holds.
-- The sweeper is one chain of messages: KEYS[2] holds "<token>:<round>", the message the live chain
-- sends next. A sweep message with another token or round stops at once (another chain, or a queue's
-- duplicate delivery), so at most one chain lives. The key is dropped when the index is empty, so the
-- chain ends and an idle store costs nothing; the next create arms a new one.
-- KEYS[1] the due-index, KEYS[2] the sweeper
-- ARGV[1] token, ARGV[2] '1' to take the sweeper over (start, manual redrive), ARGV[3] now (epoch ms),
-- ARGV[4] most jobs per sweep, ARGV[5] the swept jobs' new score, ARGV[6] the sweeper's life (ms),
-- ARGV[7] the message's round
-- Returns {'stale'} | {'ok', jobs left in the index, the earliest score or '', next round, stranded, key, gen, seq, ...}
-- (stranded: the due jobs still queued or running, header letter 'q': a lost message or a dead worker)
local round = tonumber(ARGV[7])
if ARGV[2] ~= '1' and C('GET', KEYS[2]) ~= ARGV[1] .. ':' .. ARGV[7] then
  return {'stale'}
end
-- A whole millisecond: jobs that arrived at the same one carry a fraction of it (create.lua's due_add).
local keys = C('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('(%.0f', tonumber(ARGV[3]) + 1), 'LIMIT', 0,
  tonumber(ARGV[4]))
local out = {'ok', 0, '', round + 1, 0}
local stranded = 0
for _, key in ipairs(keys) do
  local v = C('GET', key)
  local state, gen, seq
  if v then
    state, gen, seq = string.match(v, '^J1 (%a) (%x+) (%d+) ')
  end
  if gen then
    if state == 'q' then stranded = stranded + 1 end
    C('ZADD', KEYS[1], ARGV[5], key)
    out[#out + 1] = key
    out[#out + 1] = gen
    out[#out + 1] = seq
  else
    C('ZREM', KEYS[1], key)
  end
end
local left = C('ZCARD', KEYS[1])
out[2] = left
out[5] = stranded
if left == 0 then
  C('DEL', KEYS[2])
else
  out[3] = C('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]
  C('SET', KEYS[2], ARGV[1] .. ':' .. (round + 1), 'PX', ARGV[6])
end
return out
