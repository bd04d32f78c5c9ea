-- Prepended to every script a route or a step runs (store/upstash/mod.rs; the rules: budget.rs).
-- budget_count() adds what this call spent to the budget's buckets; the epilogue mod.rs appends calls it
-- once the script's own work is done, so the store commands it adds are every command this call
-- executed (EXECUTED, scripts/count.lua), its own HINCRBYs and EXPIREATs included (they are billed too).
-- The last two KEYS are this hour's bucket (st:b:h:<yyyymmddhh>) and this month's (st:b:m:<yyyymm>);
-- the last six ARGV are the owner ('': the deployment's call), the Lambda invocations and the SQS
-- requests the call implies (budget.rs Charge::aws), the hour bucket's and the month bucket's expiry
-- (epoch s), and the script call's own billed commands (count.lua).
-- Fields: s store commands, l Lambda invocations, q SQS requests, j jobs; bare for the deployment,
-- '<letter>:<owner>' for the owner.
local BUDGET_HOUR = KEYS[#KEYS - 1]
local BUDGET_MONTH = KEYS[#KEYS]
local BUDGET_OWNER = ARGV[#ARGV - 5]
-- The HINCRBYs one non-zero field costs: the deployment's and the owner's, in both buckets.
local BUDGET_PER_FIELD = 2
if BUDGET_OWNER ~= '' then
  BUDGET_PER_FIELD = 4
end
local function budget_add(letter, n)
  if n > 0 then
    C('HINCRBY', BUDGET_HOUR, letter, n)
    C('HINCRBY', BUDGET_MONTH, letter, n)
    if BUDGET_OWNER ~= '' then
      C('HINCRBY', BUDGET_HOUR, letter .. ':' .. BUDGET_OWNER, n)
      C('HINCRBY', BUDGET_MONTH, letter .. ':' .. BUDGET_OWNER, n)
    end
  end
end
local function budget_count()
  local lambda, sqs = tonumber(ARGV[#ARGV - 4]), tonumber(ARGV[#ARGV - 3])
  -- What budget_count itself is about to execute: the store field, the two others when non-zero, two EXPIREATs.
  local own = 2 + BUDGET_PER_FIELD
  if lambda > 0 then own = own + BUDGET_PER_FIELD end
  if sqs > 0 then own = own + BUDGET_PER_FIELD end
  budget_add('s', EXECUTED + own)
  budget_add('l', lambda)
  budget_add('q', sqs)
  C('EXPIREAT', BUDGET_HOUR, ARGV[#ARGV - 2])
  C('EXPIREAT', BUDGET_MONTH, ARGV[#ARGV - 1])
end
