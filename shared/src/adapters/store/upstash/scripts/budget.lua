-- Prepended to every script (store/upstash/mod.rs; the rules: budget.rs).
-- One string per owner and month (st:b:m:<yyyymm>:<owner>) holds signed 64-bit counters, read and
-- written with BITFIELD: the owner's budget (#0..#3 the month's jobs created, store commands, Lambda
-- invocations and SQS requests, then the same four for each hour h of the month at #(4 + 4h)), and
-- behind the hours the owner's live counters (OWNER_SLOTS): its rate window (the window's id, the
-- requests counted in it), its jobs in flight, and today's finished jobs (the day, completed, failed).
-- So the command that counts a request against its owner's rate limit, or takes a finished job out
-- of flight, also adds what the call spent to the budget: the budget costs no command of its own on
-- a job's path. owner_bitfield() is that command; the epilogue mod.rs appends (budget_count) adds
-- whatever the call executed that no owner_bitfield counted yet (a path that ran more or fewer
-- commands than it announced, a script with no owner counter to touch), in one more BITFIELD.
-- Once per owner and month (the bucket just created): its expiry, its owner's place in the month's
-- owner set (st:b:o:<yyyymm>: the deployment's read sums its owners), and the jobs in flight carried
-- over from the previous month's bucket.
-- The last three KEYS: the owner's bucket this month, last month's, the month's owners; the last
-- eight ARGV: the owner ('': the deployment's own call), the Lambda invocations and the SQS requests
-- the call implies (budget.rs Charge::aws), the hour of the month, the bucket's expiry (epoch s),
-- store commands a claim executed for the step this call finishes (counted here), '1' to check the
-- engine's clock against the store's (clock.lua), and the script call's own billed commands (count.lua).
local BUDGET_MONTH = KEYS[#KEYS - 2]
local BUDGET_PREVIOUS = KEYS[#KEYS - 1]
local BUDGET_OWNERS = KEYS[#KEYS]
local SLOT_WINDOW, SLOT_REQUESTS, SLOT_FLIGHT, SLOT_DAY, SLOT_COMPLETED, SLOT_FAILED = 2980, 2981, 2982, 2983, 2984, 2985
local BUDGET_JOBS = 0
-- Store commands already added to the budget by this call (a carried claim's are owed: negative).
local BUDGET_COUNTED = -tonumber(ARGV[#ARGV - 2])
local BUDGET_AWS_DONE = false
-- Set by a claim that hands its count to the finish of its step (mod.rs carries it).
local BUDGET_CARRY = false
-- Counts a job created by this call.
local function budget_job()
  BUDGET_JOBS = BUDGET_JOBS + 1
end
-- One BITFIELD on the owner's bucket: the budget's additions, then ops ({'INCRBY', slot, n} or
-- {'GET', slot}). after: the commands this call will still run once this one has (counted now).
-- Returns each op's result by slot.
local function owner_bitfield(ops, after)
  local h = 4 + 4 * tonumber(ARGV[#ARGV - 4])
  local store = EXECUTED + 1 + after - BUDGET_COUNTED
  local lambda, sqs = 0, 0
  if not BUDGET_AWS_DONE then
    lambda, sqs = tonumber(ARGV[#ARGV - 6]), tonumber(ARGV[#ARGV - 5])
    BUDGET_AWS_DONE = true
  end
  local args = {'BITFIELD', BUDGET_MONTH,
    'INCRBY', 'i64', '#0', BUDGET_JOBS, 'INCRBY', 'i64', '#1', store, 'INCRBY', 'i64', '#2', lambda, 'INCRBY', 'i64', '#3', sqs,
    'INCRBY', 'i64', '#' .. h, BUDGET_JOBS, 'INCRBY', 'i64', '#' .. (h + 1), store,
    'INCRBY', 'i64', '#' .. (h + 2), lambda, 'INCRBY', 'i64', '#' .. (h + 3), sqs}
  for _, op in ipairs(ops) do
    args[#args + 1] = op[1]
    args[#args + 1] = 'i64'
    args[#args + 1] = '#' .. op[2]
    if op[1] ~= 'GET' then
      args[#args + 1] = op[3]
    end
  end
  local got = C(unpack(args))
  BUDGET_COUNTED = BUDGET_COUNTED + store
  BUDGET_JOBS = 0
  local out = {}
  for i, op in ipairs(ops) do
    out[op[2]] = tonumber(got[8 + i])
  end
  -- A month whose store count is this call's alone was just created.
  if tonumber(got[2]) == store then
    local carried = tonumber(C('BITFIELD', BUDGET_PREVIOUS, 'GET', 'i64', '#' .. SLOT_FLIGHT)[1])
    C('EXPIREAT', BUDGET_MONTH, ARGV[#ARGV - 3])
    C('SADD', BUDGET_OWNERS, ARGV[#ARGV - 7])
    C('EXPIREAT', BUDGET_OWNERS, ARGV[#ARGV - 3])
    -- These five commands, counted by the last of them.
    C('BITFIELD', BUDGET_MONTH, 'INCRBY', 'i64', '#' .. SLOT_FLIGHT, carried, 'INCRBY', 'i64', '#1', 5,
      'INCRBY', 'i64', '#' .. (h + 1), 5)
    BUDGET_COUNTED = BUDGET_COUNTED + 5
    if out[SLOT_FLIGHT] then
      out[SLOT_FLIGHT] = out[SLOT_FLIGHT] + carried
    end
  end
  return out
end
-- The epilogue: whatever this call executed that no owner_bitfield counted yet.
local function budget_count()
  if BUDGET_CARRY or (EXECUTED == BUDGET_COUNTED and BUDGET_JOBS == 0 and BUDGET_AWS_DONE) then
    return
  end
  owner_bitfield({}, 0)
end
-- Counts one request in its owner's fixed rate window (ARGV given by the script: the limit, '0' for
-- none, and the window's id: its end, epoch ms), with more ops for the same command and the commands
-- the call runs after it: the request's number in its window (0 when not limited) and the ops' results.
-- A window's first request finds another window's id: it starts the count afresh (one more BITFIELD).
local function owner_request(limit, window, more, after)
  local ops = {}
  if limit ~= '0' then
    ops = {{'GET', SLOT_WINDOW}, {'INCRBY', SLOT_REQUESTS, 1}}
  end
  for _, op in ipairs(more) do
    ops[#ops + 1] = op
  end
  local got = owner_bitfield(ops, after)
  local count = 0
  if limit ~= '0' then
    count = got[SLOT_REQUESTS]
    if got[SLOT_WINDOW] ~= tonumber(window) then
      C('BITFIELD', BUDGET_MONTH, 'SET', 'i64', '#' .. SLOT_WINDOW, window, 'SET', 'i64', '#' .. SLOT_REQUESTS, 1)
      count = 1
    end
  end
  return count, got
end
