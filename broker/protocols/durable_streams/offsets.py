"""Offsets, as the protocol's wire carries them: see ``broker.core.offsets`` (where the
engine's subscription cursors and the workers' wakes write them too)."""

from broker.core.offsets import WIDTH, ZERO, decode, encode

__all__ = ["WIDTH", "ZERO", "decode", "encode"]
