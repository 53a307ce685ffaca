"""The Durable Streams protocol's wire: offsets, headers, framing."""
