"""The Durable Streams protocol (``/v1/stream/...``), spoken over the broker's Redis streams."""
