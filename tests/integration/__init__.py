"""Integration tests: the engine against a real Redis, no broker process."""
