"""Streams to clients: the live hub, feeds, SSE framing, waiting streams."""
