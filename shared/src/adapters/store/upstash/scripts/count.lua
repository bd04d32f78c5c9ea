-- Prepended to every script first (store/upstash/mod.rs): what Upstash bills for this call is every
-- command Redis executes for it, the script call itself and each command inside. Every script calls
-- Redis through C(...), which counts; EXECUTED starts at the last argument (the script call: 1, or 2
-- when the adapter had to send EVAL after EVALSHA answered NOSCRIPT: Upstash bills both). The script's
-- answer goes back as {EXECUTED, answer} (the epilogue mod.rs appends), the adapter's "billed" figure.
local EXECUTED = tonumber(ARGV[#ARGV])
local function C(...)
  EXECUTED = EXECUTED + 1
  return redis.call(...)
end
