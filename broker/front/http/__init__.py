"""HTTP plumbing: the server protocol's bounds, request observation, JSON errors and bodies."""
