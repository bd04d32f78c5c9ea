-- Submit: creates the job or meets the live one with its id, counts the request in its owner's rate
-- window and a new job in its owner's jobs in flight (one BITFIELD, budget.lua, which also adds the
-- call to the budget), and puts a new job in the due-index. One request, atomic.
-- KEYS[1] job record, KEYS[2] the due-index (st:due: member the job's key, score when its next step is
-- due), KEYS[3] the sweeper token (st:sweeper), KEYS[4] the provider states (st:pv)
-- ARGV[1] record, ARGV[2] the owner's record key prefix (st:j:<owner>:), ARGV[3] expiry (epoch ms),
-- ARGV[4] rate limit ('0': none), ARGV[5] the rate window's id (its end, epoch ms), ARGV[6] in-flight
-- cap ('0': none), ARGV[7] the due score (epoch ms, with a fraction that keeps arrival order: mod.rs),
-- ARGV[8] a fresh sweeper token, ARGV[9] its life (ms), ARGV[10] now (epoch ms, the engine's clock),
-- ARGV[11] '1' when the adapter holds the provider states already (read lately: the standing leaves
-- them out, one command less), ARGV[12] the number of the ETA's horizons, then each (ms)
-- Whether a sweeper chain is alive is read from the index itself: its member ~s, scored by minus the
-- instant the chain lapses (negative: before every job), is refreshed by each sweep (sweep.lua). A new
-- job's ZADD carries ~s at minus now with LT CH: it changes ~s only when the chain has lapsed (or there
-- is none), and the count it answers says so; only then is a chain armed (two more commands).
-- Returns {'new', count, armed, standing} | {'existing', count, record, armed, standing} |
-- {'rate', count} | {'flight', count};
-- count is the request's number in its window (0 when not rate-limited); armed is 1 when no sweeper
-- was alive and ARGV[8] now names the one the caller must start (its first message: round 1).
-- standing is what the job's ETA needs (scripts/standing.lua): for a new job, every job ahead of it in
-- the index; for a job met, its rank; {} for a finished job met.
-- A new job enters the due-index in this same command, so whatever happens to the caller's answer
-- (an error, a timeout) a job that exists is due and the sweeper runs it.
check_expiry(ARGV[3], 'job', 0)
if ARGV[11] == '1' then
  STANDING_STATES = 0
end
local function arm()
  if C('SET', KEYS[3], ARGV[8] .. ':1', 'NX', 'PX', ARGV[9]) then
    C('ZADD', KEYS[2], -(tonumber(ARGV[10]) + tonumber(ARGV[9])), '~s')
    return 1
  end
  return 0
end
-- The chain's check when a job is met: the same LT CH test on ~s alone (an empty index stays empty).
local function check_chain()
  if C('ZADD', KEYS[2], 'LT', 'CH', -tonumber(ARGV[10]), '~s') == 1 then
    return arm()
  end
  return 0
end
local function limited(count)
  return ARGV[4] ~= '0' and count > tonumber(ARGV[4])
end
-- Create and dedupe in one command: NX writes only a new id, GET returns what was there.
local old = C('SET', KEYS[1], ARGV[1], 'NX', 'GET', 'PXAT', ARGV[3])
local state, _, _, old_expires = header(old)
if old and state ~= 'f' then
  -- Met: the request is counted, nothing is written. After the count: the chain's check, and for
  -- an unfinished job its place (standing.lua: the index's head and the provider states).
  local after = 1
  if not finished(state) then
    after = 2 + STANDING_STATES
  end
  local count = owner_request(ARGV[4], ARGV[5], {}, after)
  if limited(count) then
    return {'rate', count}
  end
  local armed = check_chain()
  if finished(state) then
    return {'existing', count, old, armed, {}}
  end
  return {'existing', count, old, armed, standing_of(KEYS[2], KEYS[4], KEYS[1], 12)}
end
-- New (or replacing a finally failed job with the same identity): counted in the owner's window and
-- jobs in flight. After the count: ZADD (the chain's check with it) and standing.lua's two.
if old then
  -- A finally failed job: the new one takes its key (NX wrote nothing).
  C('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[3])
end
budget_job()
local cap = tonumber(ARGV[6])
local count, got = owner_request(ARGV[4], ARGV[5], {{'INCRBY', SLOT_FLIGHT, 1}}, 2 + STANDING_STATES)
local full = cap > 0 and got[SLOT_FLIGHT] > cap
local healed = nil
if full and not limited(count) then
  -- The count says full. It drifts up when a job expires unfinished (nothing finishes it), so it is
  -- recounted from the index before a refusal: the owner's unfinished jobs still there.
  local keys, cursor = {}, '0'
  repeat
    local page = C('ZSCAN', KEYS[2], cursor, 'MATCH', ARGV[2] .. '*', 'COUNT', 1000)
    cursor = page[1]
    for i = 1, #page[2], 2 do
      keys[#keys + 1] = page[2][i]
    end
  until cursor == '0'
  local live = 0
  for i = 1, #keys, 1000 do
    local records = C('MGET', unpack(keys, i, math.min(i + 999, #keys)))
    for _, v in ipairs(records) do
      local s = header(v)
      if s and not finished(s) then
        live = live + 1
      end
    end
  end
  full = live >= cap
  healed = live
  if not full then
    owner_bitfield({{'SET', SLOT_FLIGHT, live + 1}}, 2 + STANDING_STATES)
  end
end
if full or limited(count) then
  -- Refused: the record goes (or the failed job it replaced comes back), and the counts with it.
  if old then
    C('SET', KEYS[1], old, 'PXAT', old_expires)
  else
    C('DEL', KEYS[1])
  end
  BUDGET_JOBS = -1
  if healed then
    owner_bitfield({{'SET', SLOT_FLIGHT, healed}}, 0)
  else
    owner_bitfield({{'INCRBY', SLOT_FLIGHT, -1}}, 0)
  end
  if limited(count) then
    return {'rate', count}
  end
  return {'flight', count}
end
local armed = 0
if old then
  -- ZADD moves the entry a failed job still had (deliveries owed) to the new job's due time.
  C('ZADD', KEYS[2], ARGV[7], KEYS[1])
  armed = check_chain()
elseif C('ZADD', KEYS[2], 'LT', 'CH', -tonumber(ARGV[10]), '~s', ARGV[7], KEYS[1]) == 2 then
  armed = arm()
end
return {'new', count, armed, standing_of(KEYS[2], KEYS[4], KEYS[1], 12)}
