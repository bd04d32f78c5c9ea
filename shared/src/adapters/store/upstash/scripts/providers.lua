-- Every provider's shared state (GET /v1/providers, the /health check), counted like every other
-- call (budget.lua, prepended).
-- KEYS[1] provider states (st:pv: one JSON object); then budget.lua's
return C('GET', KEYS[1]) or false
