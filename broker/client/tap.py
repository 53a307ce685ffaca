"""``broker.client.tap``: the tap's public import path; the tap itself reads Redis, so it lives
in the engine (``broker.engine.tap``)."""

from broker.engine.tap import Tap, TapEvent, tap_encoder, tap_events

__all__ = ["Tap", "TapEvent", "tap_encoder", "tap_events"]
