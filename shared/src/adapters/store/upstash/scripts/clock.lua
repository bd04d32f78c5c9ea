-- Prepended to every script that writes an absolute expiry (store/upstash/mod.rs).
-- Expiries are computed on the engine's clock; Redis enforces them on its own. When the two disagree
-- by more than skew (a manual clock in a test anchored to a fixed date, a host whose clock drifted),
-- the key would vanish the moment it is written. That is a bug to surface, not a job to lose: the
-- script refuses before it writes anything, with an error the adapter turns into
-- StoreError::ExpiryInPast. TIME is a billed command, and clocks do not jump between two calls: the
-- adapter asks for the check (budget.lua's ARGV) on its first call and then once a minute, not on
-- every call.
local CLOCK_CHECK = ARGV[#ARGV - 1] == '1'
local STORE_NOW = nil
local function check_expiry(at, what, slack_ms)
  if not CLOCK_CHECK then
    return
  end
  if not STORE_NOW then
    local t = C('TIME')
    STORE_NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  if tonumber(at) + slack_ms <= STORE_NOW then
    error({err = 'STEPPER_EXPIRY_IN_PAST ' .. what .. ' expires at ' .. at .. ' ms, the store clock reads '
      .. STORE_NOW .. ' ms: the engine clock is behind the store clock'})
  end
end
