-- Prepended to every script a route or a step runs (store/upstash/mod.rs; the rules: budget.rs).
-- budget_count() counts what this call spends, in commands Upstash does not bill (a script is one billed command):
-- the last two KEYS are this hour's bucket (st:b:h:<yyyymmddhh>) and this month's (st:b:m:<yyyymm>);
-- the last six ARGV are the owner ('': the deployment's call), the Lambda invocations and the SQS
-- requests the call implies (budget.rs Charge::aws), the hour bucket's and the month bucket's expiry
-- (epoch s), and the billed store commands (1, or 2 when the script had to be loaded first).
-- Fields: s store commands, l Lambda invocations, q SQS requests, j jobs; bare for the deployment,
-- '<letter>:<owner>' for the owner.
local BUDGET_HOUR = KEYS[#KEYS - 1]
local BUDGET_MONTH = KEYS[#KEYS]
local BUDGET_OWNER = ARGV[#ARGV - 5]
local function budget_add(letter, n)
  if n > 0 then
    redis.call('HINCRBY', BUDGET_HOUR, letter, n)
    redis.call('HINCRBY', BUDGET_MONTH, letter, n)
    if BUDGET_OWNER ~= '' then
      redis.call('HINCRBY', BUDGET_HOUR, letter .. ':' .. BUDGET_OWNER, n)
      redis.call('HINCRBY', BUDGET_MONTH, letter .. ':' .. BUDGET_OWNER, n)
    end
  end
end
-- Every counted script calls this once, first thing after its clock checks (a refused script writes nothing).
local function budget_count()
  budget_add('s', tonumber(ARGV[#ARGV]))
  budget_add('l', tonumber(ARGV[#ARGV - 4]))
  budget_add('q', tonumber(ARGV[#ARGV - 3]))
  redis.call('EXPIREAT', BUDGET_HOUR, ARGV[#ARGV - 2])
  redis.call('EXPIREAT', BUDGET_MONTH, ARGV[#ARGV - 1])
end
