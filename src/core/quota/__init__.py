"""Rate limits and token budgets: the RateLimiter port, memory and DynamoDB adapters."""
