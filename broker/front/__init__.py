"""The stateless HTTP/SSE tier: routes, feeds, the live notices fanned out to local clients."""
