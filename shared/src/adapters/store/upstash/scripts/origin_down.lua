-- The receiver-recovery fast path, on a delivery that failed because its origin did not answer
-- (domain/origins.rs): marks the origin down in the shared states, lists the delivery's job among
-- those waiting on the origin's recovery, and hands out or moves on the origin's one probe. The same
-- rules as origins::mark_down, rule for rule (the store contract suite holds the two together).
-- Only the failure path runs it: an ordinary delivery never does.
-- KEYS[1] provider states (st:pv: the origin's state is its field ~o:<origin>), KEYS[2] the origin's
-- waiting jobs (st:o:<origin>: member the record key, score its delivery's scheduled time)
-- ARGV[1] the origin's field (~o:<origin>), ARGV[2] the job's record key, ARGV[3] the delivery as a
-- probe holder (<job id>/<index>), ARGV[4] its scheduled time ('' when it was dead-lettered: it waits
-- no more), ARGV[5] '1' when the attempt was the holder's probe, ARGV[6] now (epoch ms), ARGV[7..13] the
-- rules' numbers: first probe gap, the first minute, the early gap, the steady back-off's start, the
-- longest gap, the probe's lease, the most down origins, then how long an up mark is kept
-- Returns the probe's time when this delivery holds the origin's probe, else false.
local function n(x)
  return tonumber(x) or 0
end
local now = tonumber(ARGV[6])
local FIRST, MINUTE, EARLY, STEADY, MAX = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]),
  tonumber(ARGV[10]), tonumber(ARGV[11])
local LEASE, MAX_ORIGINS, KEPT = tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14])
local raw = C('GET', KEYS[1])
local all = {}
if raw then
  all = cjson.decode(raw)
end
local changed = false
local downs = 0
for name, s in pairs(all) do
  if type(s) == 'table' and string.sub(name, 1, 3) == '~o:' then
    if n(s.d) == 0 and n(s.u) + KEPT < now then
      all[name] = nil
      changed = true
    elseif n(s.d) > 0 then
      downs = downs + 1
    end
  end
end
local waits = ARGV[4] ~= ''
local o = all[ARGV[1]]
local function finish(answer, tracked)
  if changed then
    C('SET', KEYS[1], cjson.encode(all), 'PX', 8 * 86400000)
  end
  if tracked and waits then
    C('ZADD', KEYS[2], ARGV[4], ARGV[2])
    if changed then
      C('PEXPIRE', KEYS[2], 8 * 86400000)
    end
  elseif not waits then
    C('ZREM', KEYS[2], ARGV[2])
  end
  return answer
end
if type(o) ~= 'table' then
  if downs >= MAX_ORIGINS then
    return finish(false, false)
  end
  o = {}
end
if n(o.d) == 0 then
  o = {d = now, u = n(o.u), n = 0, pa = 0, pu = 0}
  changed = true
end
all[ARGV[1]] = o
local holds = o.p == ARGV[3]
if holds and ARGV[5] == '1' then
  o.n = n(o.n) + 1
  changed = true
elseif not holds and waits and (o.p == nil or o.p == '' or n(o.pu) <= now) then
  o.p = ARGV[3]
  holds = true
  changed = true
end
if holds and not waits then
  o.p = nil
  o.pa = 0
  o.pu = 0
  changed = true
  return finish(false, true)
end
if not holds then
  return finish(false, true)
end
local down_for = now - n(o.d)
local gap
if down_for < MINUTE or n(o.n) == 0 then
  gap = FIRST
elseif down_for < STEADY then
  gap = EARLY
else
  gap = math.min(math.max(math.floor(down_for / 10), EARLY), MAX)
end
o.pa = now + gap
o.pu = o.pa + LEASE
changed = true
return finish(o.pa, true)
