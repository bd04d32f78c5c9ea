-- Prepended to every script that writes an absolute expiry (store/upstash/mod.rs).
-- Expiries are computed on the engine's clock; Redis enforces them on its own. When the two disagree
-- by more than skew (a manual clock in a test anchored to a fixed date, a host whose clock drifted),
-- the key would vanish the moment it is written. That is a bug to surface, not a job to lose: the
-- script refuses before it writes anything, with an error the adapter turns into
-- StoreError::ExpiryInPast.
local function store_now_ms()
  local t = C('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Read once, and only by a script that checks an expiry (TIME is a billed command too).
local STORE_NOW = nil
-- what: names the expiry in the error; slack_ms: how far behind the store's clock it may be (the
-- end of a rate window may fall a little behind under ordinary skew; a job's expiry never may).
local function check_expiry(at, what, slack_ms)
  if not STORE_NOW then
    STORE_NOW = store_now_ms()
  end
  if tonumber(at) + slack_ms <= STORE_NOW then
    error({err = 'STEPPER_EXPIRY_IN_PAST ' .. what .. ' expires at ' .. at .. ' ms, the store clock reads '
      .. STORE_NOW .. ' ms: the engine clock is behind the store clock'})
  end
end
-- Rate windows: one second of ordinary skew is forgiven (the counter then simply starts afresh).
local RATE_WINDOW_SLACK_MS = 1000
-- Counts one request in an owner's rate window (key: st:r:<owner>:<window id>, ends_at: the window's
-- end, epoch ms): its number in the window. Only the window's first request writes the expiry, so only
-- it checks the clock (the counter it just created goes again before the refusal).
local function count_request(key, ends_at)
  local count = C('INCR', key)
  if count == 1 then
    if not STORE_NOW then
      STORE_NOW = store_now_ms()
    end
    if tonumber(ends_at) + RATE_WINDOW_SLACK_MS <= STORE_NOW then
      C('DEL', key)
      check_expiry(ends_at, 'rate window', RATE_WINDOW_SLACK_MS)
    end
    C('PEXPIREAT', key, ends_at)
  end
  return count
end
