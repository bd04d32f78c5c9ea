-- Submit: counts the request in its owner's rate window, then creates the job or meets the live one
-- with its id; a new job must fit under the owner's cap on jobs in flight. One request, atomic.
-- KEYS[1] job record, KEYS[2] the owner's rate counter (st:r:<owner>:<window id>),
-- KEYS[3] the owner's jobs in flight (st:f:<owner>: member job id, score the job's expiry),
-- KEYS[4] the due-index (st:due: member the job's key, score when its next step is due),
-- KEYS[5] the sweeper token (st:sweeper), KEYS[6] the owner's unfinished jobs by submit time (st:u:<owner>:
-- member job id, score when it was submitted; read by overview.lua), KEYS[7] the provider states (st:providers)
-- ARGV[1] record, ARGV[2] job id, ARGV[3] expiry (epoch ms), ARGV[4] now (epoch ms),
-- ARGV[5] rate limit ('0': none), ARGV[6] rate window end (epoch ms), ARGV[7] in-flight cap ('0': none),
-- ARGV[8] due score (epoch ms), ARGV[9] a fresh sweeper token, ARGV[10] its life (ms),
-- ARGV[11] when the job was submitted (epoch ms), ARGV[12] the number of the ETA's horizons, then each (ms)
-- Returns {'new', count, armed, standing} | {'existing', count, record, armed, standing} |
-- {'rate', count} | {'flight', count};
-- count is the request's number in its window (0 when not rate-limited); armed is 1 when no sweeper
-- was alive and ARGV[9] now names the one the caller must start (its first message: round 1).
-- standing is what the job's ETA needs (scripts/standing.lua): for a new job, every job due no later than it is
-- ahead; for a job met, its rank; {} for a finished job met.
-- A new job enters the due-index in this same command, so whatever happens to the caller's answer
-- (an error, a timeout) a job that exists is due and the sweeper runs it.
check_expiry(ARGV[3], 'job', 0)
-- Jobs due at the same millisecond keep the order they arrived in: the k-th gets k/4096 ms more, so a
-- job's rank (ZRANK) is its place in line (the ETA; store/memory.rs keeps the same order). ZADD moves a
-- member already there. An index lives as long as its longest-lived member: extended by one
-- PEXPIREAT GT (a set without expiry, a new one, is given one).
local function due_add(key, score, member, expiry)
  local ms = tonumber(score)
  local k = C('ZCOUNT', key, string.format('%.0f', ms), string.format('(%.0f', ms + 1))
  C('ZADD', key, string.format('%.12f', ms + k / 4096), member)
  if expiry and C('PEXPIREAT', key, expiry, 'GT') == 0 and C('PTTL', key) < 0 then
    C('PEXPIREAT', key, expiry)
  end
end
local function arm()
  if C('SET', KEYS[5], ARGV[9] .. ':1', 'NX', 'PX', ARGV[10]) then
    return 1
  end
  return 0
end
-- An unfinished job met: its rank; a finished one needs no ETA.
local function met(v)
  if string.sub(v, 4, 4) == 's' or string.sub(v, 4, 4) == 'f' then
    return {}
  end
  local score = C('ZSCORE', KEYS[4], KEYS[1])
  return standing(KEYS[4], KEYS[7], C('ZRANK', KEYS[4], KEYS[1]) or 0, score and math.floor(tonumber(score)), 12)
end
local count = 0
if ARGV[5] ~= '0' then
  count = count_request(KEYS[2], ARGV[6])
  if count > tonumber(ARGV[5]) then
    return {'rate', count}
  end
end
local cap = tonumber(ARGV[7])
local live = 0
if cap > 0 then
  live = C('ZCARD', KEYS[3])
  if live >= cap then
    -- Jobs that expired without finishing leave by their score before a refusal is decided, so the
    -- count cannot drift (and the set never holds more than cap members).
    C('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[4])
    live = C('ZCARD', KEYS[3])
  end
  if live >= cap then
    -- Full: an identical live job is still met (it is already counted), nothing new is written.
    local v = C('GET', KEYS[1])
    if v and string.sub(v, 4, 4) ~= 'f' then
      return {'existing', count, v, arm(), met(v)}
    end
    return {'flight', count}
  end
end
-- Create and dedupe in one command: NX writes only a new id, GET returns what was there.
local old = C('SET', KEYS[1], ARGV[1], 'NX', 'GET', 'PXAT', ARGV[3])
if old then
  if string.sub(old, 4, 4) ~= 'f' then
    return {'existing', count, old, arm(), met(old)}
  end
  -- A finally failed job with the same identity: the new submit replaces it (and its index entries).
  C('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[3])
  C('ZREM', KEYS[4], KEYS[1])
end
if cap > 0 then
  C('ZADD', KEYS[3], ARGV[3], ARGV[2])
  -- The set lives as long as its longest-lived member; a set that was empty has no expiry yet
  -- (GT treats "no expiry" as infinite, so it would never set one).
  if live == 0 then
    C('PEXPIREAT', KEYS[3], ARGV[3])
  else
    C('PEXPIREAT', KEYS[3], ARGV[3], 'GT')
  end
end
-- The new job joins the end of the line of those due no later than it (its millisecond included).
local ahead = C('ZCOUNT', KEYS[4], '-inf', string.format('(%.0f', tonumber(ARGV[8]) + 1))
due_add(KEYS[4], ARGV[8], KEYS[1], ARGV[3])
due_add(KEYS[6], ARGV[11], ARGV[2], ARGV[3])
-- A job created: counted in its owner's budget buckets (budget.lua).
budget_job()
return {'new', count, arm(), standing(KEYS[4], KEYS[7], ahead, tonumber(ARGV[8]), 12)}
