"""A durable, resumable stream broker for LLM token streams, backed by Redis."""
