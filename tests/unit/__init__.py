"""Unit tests: no Redis, no broker process; each runs in milliseconds."""
