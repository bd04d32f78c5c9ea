-- One sweep of the due-index: the jobs whose next step is due (or overdue: a lost message, a lease
-- that lapsed) come back with their current step so the sweeper can queue it, and move to now +
-- grace so the next sweep only sees them again if they made no progress. A due job whose step holds
-- a live lease (header.lua) is not sent: it moves to the lease's end. Entries whose record is gone
-- (expired, purged) are dropped here, on read. A constant number of commands whatever the index holds:
-- the records are read with one MGET, the entries moved with one ZADD and dropped with one ZREM.
-- The sweeper is one chain of messages: KEYS[2] holds "<token>:<round>", the message the live chain
-- sends next. A sweep message with another token or round stops at once (another chain, or a queue's
-- duplicate delivery), so at most one chain lives; a message that finds no chain at all (its key
-- lapsed while the message was late) takes the chain over, so a late message never ends it. The key
-- is dropped when the index holds no job, so the chain ends and an idle store costs nothing; the next
-- create arms a new one. The index's member ~s says the chain is alive to the creates (create.lua):
-- each sweep scores it minus the instant the chain lapses, and the index goes with the chain.
-- KEYS[1] the due-index, KEYS[2] the sweeper
-- ARGV[1] token, ARGV[2] '1' to take the sweeper over (start, manual redrive), ARGV[3] now (epoch ms),
-- ARGV[4] most jobs per sweep, ARGV[5] the swept jobs' new score, ARGV[6] the sweeper's life (ms),
-- ARGV[7] the message's round, ARGV[8] the index's life (ms)
-- Returns {'stale'} | {'ok', jobs left in the index, the earliest score or '', next round, stranded, key, gen, seq, ...}
-- (stranded: the due jobs still queued or running, header letter 'q': a lost message or a dead worker)
local round = tonumber(ARGV[7])
if ARGV[2] ~= '1' then
  local live = C('GET', KEYS[2])
  if live and live ~= ARGV[1] .. ':' .. ARGV[7] then
    return {'stale'}
  end
end
-- A whole millisecond: jobs that arrived at the same one carry a fraction of it (mod.rs due scores).
-- ~s (negative: first) comes with them when it is there, and says so; it is no job.
local keys = C('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('(%.0f', tonumber(ARGV[3]) + 1), 'LIMIT', 0,
  tonumber(ARGV[4]) + 1)
local chain_member = keys[1] == '~s'
if chain_member then
  table.remove(keys, 1)
elseif #keys > tonumber(ARGV[4]) then
  table.remove(keys)
end
local out = {'ok', 0, '', round + 1, 0}
local stranded = 0
local now = tonumber(ARGV[3])
-- Nothing due, and nothing else in the index: the chain ends here, the index (~s at most) with it.
if #keys == 0 then
  local members = C('ZCARD', KEYS[1])
  if chain_member then
    members = members - 1
  end
  if members == 0 then
    C('DEL', KEYS[2], KEYS[1])
    return out
  end
end
-- ~s moves with every sweep, in the ZADD that moves the swept jobs.
local moved = {'ZADD', KEYS[1], -(now + tonumber(ARGV[6])), '~s'}
if #keys > 0 then
  local records = C('MGET', unpack(keys))
  local gone = {'ZREM', KEYS[1]}
  for i, key in ipairs(keys) do
    local state, gen, seq, _, _, lease = header(records[i])
    if not gen then
      gone[#gone + 1] = key
    elseif lease > now then
      -- A step holds it: due again when its lease ends.
      moved[#moved + 1] = string.format('%.0f', lease)
      moved[#moved + 1] = key
    else
      if state == 'q' then stranded = stranded + 1 end
      moved[#moved + 1] = ARGV[5]
      moved[#moved + 1] = key
      out[#out + 1] = key
      out[#out + 1] = gen
      out[#out + 1] = seq
    end
  end
  if #gone > 2 then C(unpack(gone)) end
end
C(unpack(moved))
-- The index lives while sweeps run: each sixteenth round (and a take-over) extends it by ARGV[8], the
-- longest a job lives, so an index whose sweeper died goes once every job in it has.
if ARGV[2] == '1' or round % 16 == 1 then
  C('PEXPIRE', KEYS[1], ARGV[8])
end
-- Jobs left: every member but ~s (there since the ZADD above).
local left = C('ZCARD', KEYS[1]) - 1
out[2] = left
out[5] = stranded
if left == 0 then
  -- No job left: the chain ends, and the index (nothing but ~s) with it.
  C('DEL', KEYS[2], KEYS[1])
else
  out[3] = C('ZRANGEBYSCORE', KEYS[1], '0', '+inf', 'WITHSCORES', 'LIMIT', 0, 1)[2]
  C('SET', KEYS[2], ARGV[1] .. ':' .. (round + 1), 'PX', ARGV[6])
end
return out
