-- Every provider's shared state (GET /v1/providers, the /health check), counted like every other
-- call (budget.lua, prepended).
-- KEYS[1] provider states hash; then budget.lua's
return C('HGETALL', KEYS[1])
