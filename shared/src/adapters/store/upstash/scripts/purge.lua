-- Deletes one incarnation of an owner's job (a purge by id): another incarnation under the same key (a
-- resubmit that replaced a finally failed job) is left alone, so the check and the delete are one
-- script. A purge by commit needs no check: the adapter sends GETDEL alone. What the deleted job still
-- held (its due-index entry, its place in flight, among the dead-lettered) purged.lua clears.
-- KEYS[1] job record
-- ARGV[1] the incarnation (gen) the purged id names
-- Returns the deleted record, or false when there was none of that incarnation.
-- Its count is left to the adapter (BUDGET_CARRY): it rides on the owner's next counted call.
BUDGET_CARRY = true
local v = C('GET', KEYS[1])
if not v or select(2, header(v)) ~= ARGV[1] then
  return false
end
C('DEL', KEYS[1])
return v
