-- Counts in the budget what this process's polls and purges of the owner executed (budget.lua's carry,
-- the last arguments): nothing of its own but the count, which the epilogue (budget_count) writes in
-- one BITFIELD.
return 1
