-- Claims one step (issue 17): the job, its lease and every provider's state in one command.
-- The lease is one key per job (st:l:<owner>:<id>, value "<gen>:<seq>"), deleted by finish and purge,
-- so a purged job leaves nothing behind. A claim moves the job's due-index score to the lease's end:
-- should the step die (or this claim land after its caller gave up waiting), the sweeper finds the
-- job due once the lease has lapsed and sends its step again.
-- KEYS[1] job record, KEYS[2] the job's lease, KEYS[3] provider states hash, KEYS[4] the due-index
-- ARGV[1] gen, ARGV[2] seq, ARGV[3] lease (ms), ARGV[4] the lease's end (epoch ms, the due score)
-- Returns {'missing'} | {'stale', record} | {'busy', lease ms left} | {'ok', record, {provider states}}
local v = redis.call('GET', KEYS[1])
if not v then
  -- Purged or expired: whatever the index still holds for it goes now.
  redis.call('ZREM', KEYS[4], KEYS[1])
  return {'missing'}
end
local gen, seq, expires = string.match(v, '^J1 %a (%x+) (%d+) (%d+)')
if gen ~= ARGV[1] or seq ~= ARGV[2] then
  return {'stale', v}
end
local token = ARGV[1] .. ':' .. ARGV[2]
local held = redis.call('SET', KEYS[2], token, 'NX', 'GET', 'PX', ARGV[3])
if held then
  if held == token then
    return {'busy', redis.call('PTTL', KEYS[2])}
  end
  -- A lease naming another step cannot block this one (finish deletes it; this is a leftover).
  redis.call('SET', KEYS[2], token, 'PX', ARGV[3])
end
redis.call('ZADD', KEYS[4], ARGV[4], KEYS[1])
if redis.call('PTTL', KEYS[4]) < 0 then
  redis.call('PEXPIREAT', KEYS[4], expires)
else
  redis.call('PEXPIREAT', KEYS[4], expires, 'GT')
end
return {'ok', v, redis.call('HGETALL', KEYS[3])}
