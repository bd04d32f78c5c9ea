-- Prepended to the scripts that read a field of a job record's JSON (overview.lua: the tenant;
-- claim.lua: the tenant, the submit time and the priority, only when the turns' priority needs them).
-- The record's JSON (serde's compact form, after the header line) is walked, never rewritten: the
-- values before the field are skipped whole (a string by its closing quote, an object or array by its
-- brackets), so a key of the same name inside a prompt, a schema or the metadata is never taken.
local function skip_string(s, i)
  local j = i + 1
  while true do
    local q = string.find(s, '"', j, true)
    if not q then return #s + 1 end
    local b = q - 1
    while string.byte(s, b) == 92 do b = b - 1 end
    if (q - 1 - b) % 2 == 0 then return q + 1 end
    j = q + 1
  end
end
local function skip_value(s, i)
  local c = string.byte(s, i)
  if c == 34 then return skip_string(s, i) end
  if c == 123 or c == 91 then
    local depth, j = 0, i
    while true do
      local k = string.find(s, '[%[%]{}"]', j)
      if not k then return #s + 1 end
      local ch = string.byte(s, k)
      if ch == 34 then
        j = skip_string(s, k)
      else
        depth = depth + ((ch == 123 or ch == 91) and 1 or -1)
        j = k + 1
        if depth == 0 then return j end
      end
    end
  end
  return string.find(s, '[,}%]]', i) or #s + 1
end
-- Where the value of `name` starts in the object at i, or nil.
local function member(s, i, name)
  if not i or string.byte(s, i) ~= 123 then return nil end
  local j = i + 1
  while string.byte(s, j) == 34 do
    local after = skip_string(s, j)
    if string.sub(s, j + 1, after - 2) == name then return after + 1 end
    j = skip_value(s, after + 1)
    if string.byte(s, j) ~= 44 then return nil end
    j = j + 1
  end
  return nil
end
-- Where the record's JSON starts (after its header line), or nil.
local function json_start(v)
  local nl = string.find(v, '\n', 1, true)
  return nl and nl + 1
end
-- The job's tenant name (Job::tenant_name): its spec's context's `tenantId`, else `userId`, when a
-- non-empty string; '' when it names neither.
local function tenant_name(v, spec)
  local context = member(v, spec, 'context')
  for _, field in ipairs({'tenantId', 'userId'}) do
    local at = member(v, context, field)
    if at and string.byte(v, at) == 34 then
      local named = cjson.decode(string.sub(v, at, skip_string(v, at) - 1))
      if named ~= '' then return named end
    end
  end
  return ''
end
