"""The stateless HTTP/SSE tier: routes, feeds, the shared live tail."""
