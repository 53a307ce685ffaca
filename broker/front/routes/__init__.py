"""The routes, each declared once: API v1, AI SDK, Durable Streams, web page, operations."""
