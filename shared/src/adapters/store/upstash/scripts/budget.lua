-- Prepended to every script a route or a step runs (store/upstash/mod.rs; the rules: budget.rs).
-- budget_count() adds what this call spent to its owner's budget; the epilogue mod.rs appends calls it
-- once the script's own work is done, so the store commands it adds are every command this call
-- executed (EXECUTED, scripts/count.lua), its own included (they are billed too).
-- An owner's budget for a month is one string read as signed 64-bit counters (BITFIELD): #0..#3 the
-- month's jobs created, store commands, Lambda invocations and SQS requests, then the same four for
-- each hour of the month (hour h of the month at #(4 + 4h)). One BITFIELD adds to the month and to the
-- hour at once: one command a call; once per owner and month, the bucket's expiry and the month's owner
-- list (st:b:o:<yyyymm>, a set: the deployment's read sums its owners).
-- The last two KEYS are the owner's month bucket (st:b:m:<yyyymm>:<owner>) and the month's owners
-- (st:b:o:<yyyymm>); the last six ARGV are the owner ('': the deployment's own call), the Lambda
-- invocations and the SQS requests the call implies (budget.rs Charge::aws), the hour of the month,
-- the bucket's expiry (epoch s), and the script call's own billed commands (count.lua).
local BUDGET_MONTH = KEYS[#KEYS - 1]
local BUDGET_OWNERS = KEYS[#KEYS]
local BUDGET_JOBS = 0
-- Counts a job created by this call.
local function budget_job()
  BUDGET_JOBS = BUDGET_JOBS + 1
end
local function budget_bump(jobs, store, lambda, sqs)
  local h = 4 + 4 * tonumber(ARGV[#ARGV - 2])
  return C('BITFIELD', BUDGET_MONTH,
    'INCRBY', 'i64', '#0', jobs, 'INCRBY', 'i64', '#1', store, 'INCRBY', 'i64', '#2', lambda, 'INCRBY', 'i64', '#3', sqs,
    'INCRBY', 'i64', '#' .. h, jobs, 'INCRBY', 'i64', '#' .. (h + 1), store,
    'INCRBY', 'i64', '#' .. (h + 2), lambda, 'INCRBY', 'i64', '#' .. (h + 3), sqs)
end
local function budget_count()
  local lambda, sqs = tonumber(ARGV[#ARGV - 4]), tonumber(ARGV[#ARGV - 3])
  -- The BITFIELD below is part of what this call executes.
  local store = EXECUTED + 1
  local got = budget_bump(BUDGET_JOBS, store, lambda, sqs)
  -- A month whose store count is this call's alone was just created: the bucket gets its expiry and
  -- its owner a place in the month's list, and those commands are counted by one more BITFIELD.
  if tonumber(got[2]) == store then
    budget_bump(0, 4, 0, 0)
    C('EXPIREAT', BUDGET_MONTH, ARGV[#ARGV - 1])
    C('SADD', BUDGET_OWNERS, ARGV[#ARGV - 5])
    C('EXPIREAT', BUDGET_OWNERS, ARGV[#ARGV - 1])
  end
end
