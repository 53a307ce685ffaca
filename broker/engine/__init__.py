"""The engine: the only code that speaks Redis."""
