"""The generation runtime: workers that run model calls and append their output to Redis."""
