-- Prepended to every script that reads a job record's header (store/upstash/mod.rs `encode`):
-- `J2 <lease end, 13 digits> <state> <gen> <seq> <expires ms>[ d| x]`, then the job as JSON (never
-- parsed by Lua). The lease end (epoch ms; zeros: no step holds it) has a fixed width so a claim
-- takes the lease by rewriting those 13 bytes in place (SETRANGE at LEASE_AT), and a finish's new
-- record or a purge drops it with the record: no key of its own. `J1` records (written before the
-- lease moved into the header, no lease field) still read.
local LEASE_AT = 3
-- state letter, gen, seq, expires, flag ('d', 'x' or ''), lease end (0: none), or nil when v is not a record.
local function header(v)
  if not v then
    return nil
  end
  local lease, state, gen, seq, expires, flag = string.match(v, '^J2 (%d+) (%a) (%x+) (%d+) (%d+) ?(%a*)\n')
  if lease then
    return state, gen, seq, expires, flag, tonumber(lease)
  end
  state, gen, seq, expires, flag = string.match(v, '^J1 (%a) (%x+) (%d+) (%d+) ?(%a*)\n')
  if state then
    return state, gen, seq, expires, flag, 0
  end
  return nil
end
-- A job's place in the due-index: its rank, less the index's member ~s (first: sweep.lua).
local function place(due_key, member)
  return math.max((C('ZRANK', due_key, member) or 1) - 1, 0)
end
local function finished(state)
  return state == 's' or state == 'f'
end
