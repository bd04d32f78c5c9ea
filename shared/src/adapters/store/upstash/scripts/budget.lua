-- Prepended to every script a route or a step runs (store/upstash/mod.rs; the rules: budget.rs).
-- budget_count() adds what this call spent to its owner's budget buckets; the epilogue mod.rs appends
-- calls it once the script's own work is done, so the store commands it adds are every command this
-- call executed (EXECUTED, scripts/count.lua), its own included (they are billed too).
-- A bucket is one string per owner read as four signed 64-bit counters (BITFIELD): #0 jobs created,
-- #1 store commands, #2 Lambda invocations, #3 SQS requests. One BITFIELD adds all four: two commands a
-- call (this hour's bucket and this month's), plus, once per owner and bucket, the bucket's expiry and
-- the month's owner list (st:b:o:<yyyymm>, a set: the deployment's read sums its owners).
-- The last three KEYS are this hour's bucket (st:b:h:<yyyymmddhh>:<owner>), this month's
-- (st:b:m:<yyyymm>:<owner>) and the month's owners (st:b:o:<yyyymm>); the last six ARGV are the owner
-- ('': the deployment's own call), the Lambda invocations and the SQS requests the call implies
-- (budget.rs Charge::aws), the hour bucket's and the month bucket's expiry (epoch s), and the script
-- call's own billed commands (count.lua).
local BUDGET_HOUR = KEYS[#KEYS - 2]
local BUDGET_MONTH = KEYS[#KEYS - 1]
local BUDGET_OWNERS = KEYS[#KEYS]
local BUDGET_JOBS = 0
-- Counts a job created by this call.
local function budget_job()
  BUDGET_JOBS = BUDGET_JOBS + 1
end
local function budget_bump(key, jobs, store, lambda, sqs)
  return C('BITFIELD', key, 'INCRBY', 'i64', '#0', jobs, 'INCRBY', 'i64', '#1', store,
    'INCRBY', 'i64', '#2', lambda, 'INCRBY', 'i64', '#3', sqs)
end
local function budget_count()
  local lambda, sqs = tonumber(ARGV[#ARGV - 4]), tonumber(ARGV[#ARGV - 3])
  -- The two BITFIELDs below are part of what this call executes.
  local store = EXECUTED + 2
  local hour = budget_bump(BUDGET_HOUR, BUDGET_JOBS, store, lambda, sqs)
  local month = budget_bump(BUDGET_MONTH, BUDGET_JOBS, store, lambda, sqs)
  -- A bucket whose store count is this call's alone was just created: it gets its expiry (and a new
  -- month bucket its place in the month's owner list). Those commands are counted in both buckets by
  -- one more BITFIELD each.
  local new_hour, new_month = tonumber(hour[2]) == store, tonumber(month[2]) == store
  local extra = 0
  if new_hour then extra = extra + 1 end
  if new_month then extra = extra + 3 end
  if extra > 0 then
    extra = extra + 2
    budget_bump(BUDGET_HOUR, 0, extra, 0, 0)
    budget_bump(BUDGET_MONTH, 0, extra, 0, 0)
    if new_hour then
      C('EXPIREAT', BUDGET_HOUR, ARGV[#ARGV - 2])
    end
    if new_month then
      C('EXPIREAT', BUDGET_MONTH, ARGV[#ARGV - 1])
      C('SADD', BUDGET_OWNERS, ARGV[#ARGV - 5])
      C('EXPIREAT', BUDGET_OWNERS, ARGV[#ARGV - 1])
    end
  end
end
